#!/usr/bin/env python3
"""The notebook's loader loop (LIDCDataset.__init__), ported verbatim apart from the missing
imports, as the baseline for `make bench`. cv2 + numpy, single process, as in the notebook.

Usage: scripts/seed_loader.py LIDC_ROOT   -> prints JSON {"slices": N, "seconds": S, "slices_seen": M}
"""
import json
import os
import sys
import time

import cv2
import numpy as np


def lung_window(ct, center=-600, width=1500):
    min_v = center - width // 2
    max_v = center + width // 2
    ct = np.clip(ct, min_v, max_v)
    ct = (ct - min_v) / (max_v - min_v)
    return ct.astype(np.float32)


def load(root_dir, patch=128):
    samples = []
    seen = 0
    for patient in os.listdir(root_dir):
        p_path = os.path.join(root_dir, patient)
        if not os.path.isdir(p_path):
            continue
        for nodule in os.listdir(p_path):
            case = os.path.join(p_path, nodule)
            if not os.path.isdir(case):
                continue
            img_dir = os.path.join(case, "images")
            if not os.path.isdir(img_dir):
                continue
            mask_dirs = [os.path.join(case, f"mask-{i}") for i in range(4)]
            for f in sorted(os.listdir(img_dir)):
                if not f.endswith(".png"):
                    continue
                seen += 1
                img_path = os.path.join(img_dir, f)
                img = cv2.imread(img_path, cv2.IMREAD_GRAYSCALE)
                if img is None:
                    continue
                img = img.astype(np.float32)
                img = lung_window(img)
                mask_union = np.zeros_like(img, dtype=np.uint8)
                for md in mask_dirs:
                    mask_path = os.path.join(md, f)
                    if os.path.exists(mask_path):
                        m = cv2.imread(mask_path, cv2.IMREAD_GRAYSCALE)
                        if m is not None:
                            if m.shape != mask_union.shape:
                                # The notebook crashes here; the benchmark skips the rater.
                                continue
                            mask_union |= (m > 0)
                if mask_union.sum() == 0:
                    continue
                if img.shape[0] < patch or img.shape[1] < patch:
                    continue
                samples.append((img, mask_union.astype(np.float32)))
    return samples, seen


if __name__ == "__main__":
    cv2.setNumThreads(1)
    t = time.perf_counter()
    samples, seen = load(sys.argv[1])
    dt = time.perf_counter() - t
    print(json.dumps({"slices": len(samples), "slices_seen": seen, "seconds": dt}))

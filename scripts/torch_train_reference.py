#!/usr/bin/env python3
"""PyTorch reference training loop for lungseg's recipe, on lungseg's own prepared data.

Reads a prepared and split data directory (`shards/slices-*.parquet` + `train.parquet` /
`val.parquet`, see README "train") and trains the notebook's U-Net (scripts/torch_unet.py) the
plain PyTorch way: every epoch `torch.randperm` over the training slices, `model.train()`, one
Adam step per batch (soft Dice loss pooled over the batch, the last partial batch kept unless
--drop-last), then `model.eval()` over all validation slices in index order with TP/FP/FN/TN
pooled over every pixel at `p > threshold`. Slices are used whole: a slice smaller than --patch is
zero-padded bottom/right, a larger one cropped at a uniform random offset (no flips, no
foreground seeking: lungseg's `--fg-crop 0 --flips false`). Validation pads each batch to the
largest slice rounded up to a multiple of 4 and scores only the native pixels, as lungseg does.
Masks are the union `mask` column (lungseg's default `--fusion union`).

Writes one row per epoch to --out (.csv or .parquet): epoch, train_loss (mean over steps),
val_loss (mean over slices of their batch's loss), val_dice, val_precision, val_recall, tp, fp,
fn, tn, seconds.

Experiment options (issue #17):
  --init W.safetensors     start from these weights (a lungseg checkpoint: PyTorch's names)
  --maxpool-grad candle    emulate candle 0.11's max_pool2d backward (a unique maximum gets a
                           quarter of the gradient, each of k tied maxima k/4 of it): with it,
                           this plain PyTorch loop swings as lungseg did before it had its own
                           max-pool (BENCHMARKS.md, "Steadiness")
  --max-steps N            stop after N optimizer steps (no validation after a partial epoch)
  --steps-out FILE.csv     per-step losses: epoch, step, global_step, batch, loss

Usage:
    python3 scripts/torch_train_reference.py --data DATA --out ref.csv [--base 8] [--lr 3e-3]
        [--batch 8] [--epochs 25] [--seed 0] [--threshold 0.35] [--patch 128] [--threads 2]
"""
import argparse
import os
import sys
import time

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from candle_pool import CandlePool  # noqa: E402
from torch_unet import UNet, dice_loss  # noqa: E402


def load_split(data, name):
    """The slices of `train` or `val`, in index order: ids, patients, images and masks
    (lists of (H, W) float32 / uint8 arrays at native size)."""
    idx = pl.read_parquet(os.path.join(data, f"{name}.parquet"))
    rows = {}
    for shard in sorted(set(idx["shard"].to_list())):
        t = pq.read_table(os.path.join(data, "shards", shard),
                          columns=["slice_id", "height", "width", "image", "mask"])
        ids = t.column("slice_id").to_pylist()
        hs = t.column("height").to_pylist()
        ws = t.column("width").to_pylist()
        imgs = t.column("image").to_pylist()
        masks = t.column("mask").to_pylist()
        for r, (sid, h, w, im, m) in enumerate(zip(ids, hs, ws, imgs, masks)):
            rows[(shard, r)] = (sid, h, w, im, m)
    out_ids, images, labels = [], [], []
    for sid, shard, row in zip(idx["slice_id"], idx["shard"], idx["row"]):
        got = rows.get((shard, row))
        if got is None or got[0] != sid:
            raise SystemExit(f"{data}: {name}.parquet row ({shard}, {row}) does not hold {sid}; "
                             "the index is stale")
        _, h, w, im, m = got
        images.append(np.frombuffer(im, dtype="<f4").reshape(h, w).copy())
        labels.append((np.frombuffer(m, dtype=np.uint8).reshape(h, w) != 0).astype(np.uint8))
        out_ids.append(sid)
    return out_ids, idx["patient_id"].to_list(), images, labels


def patch_of(img, mask, p, gen):
    h, w = img.shape
    top = int(torch.randint(0, h - p + 1, (1,), generator=gen)) if h > p else 0
    left = int(torch.randint(0, w - p + 1, (1,), generator=gen)) if w > p else 0
    xi = np.zeros((p, p), np.float32)
    yi = np.zeros((p, p), np.float32)
    ch, cw = min(p, h - top), min(p, w - left)
    xi[:ch, :cw] = img[top:top + ch, left:left + cw]
    yi[:ch, :cw] = mask[top:top + ch, left:left + cw]
    return xi, yi


def load_init(model, path):
    from safetensors.torch import load_file
    sd = load_file(path)
    for name, buf in model.state_dict().items():
        if name.endswith("num_batches_tracked") and name not in sd:
            sd[name] = torch.zeros_like(buf)
    model.load_state_dict({k: (v if k.endswith("num_batches_tracked") else v.float())
                           for k, v in sd.items()}, strict=True)


@torch.no_grad()
def validate(model, images, labels, batch, threshold):
    model.eval()
    tp = fp = fn = tn = 0
    loss_sum = 0.0
    for i in range(0, len(images), batch):
        ims, lbs = images[i:i + batch], labels[i:i + batch]
        h = -(-max(im.shape[0] for im in ims) // 4) * 4
        w = -(-max(im.shape[1] for im in ims) // 4) * 4
        x = np.zeros((len(ims), 1, h, w), np.float32)
        y = np.zeros((len(ims), 1, h, w), np.float32)
        for k, (im, lb) in enumerate(zip(ims, lbs)):
            x[k, 0, :im.shape[0], :im.shape[1]] = im
            y[k, 0, :im.shape[0], :im.shape[1]] = lb
        prob = model(torch.from_numpy(x))
        loss = float(dice_loss(prob, torch.from_numpy(y)))
        prob = prob.numpy()
        for k, (im, lb) in enumerate(zip(ims, lbs)):
            p = prob[k, 0, :im.shape[0], :im.shape[1]] > threshold
            t = lb != 0
            tp += int(np.sum(p & t))
            fp += int(np.sum(p & ~t))
            fn += int(np.sum(~p & t))
            tn += int(np.sum(~p & ~t))
            loss_sum += loss
    n = len(images)
    ratio = (lambda a, b: 1.0 if b == 0 else a / b)
    return {
        "val_loss": loss_sum / max(n, 1),
        "val_recall": ratio(tp, tp + fn),
        "val_precision": ratio(tp, tp + fp),
        "val_dice": ratio(2 * tp, 2 * tp + fp + fn),
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
    }


def write_table(rows, path):
    df = pl.DataFrame(rows)
    if path.endswith(".parquet"):
        df.write_parquet(path)
    else:
        df.write_csv(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True, help="per-epoch table, .csv or .parquet")
    ap.add_argument("--base", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--val-batch", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threshold", type=float, default=0.35)
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--drop-last", action="store_true")
    ap.add_argument("--init")
    ap.add_argument("--maxpool-grad", choices=["torch", "candle"], default="torch")
    ap.add_argument("--max-steps", type=int, default=0)
    ap.add_argument("--steps-out")
    ap.add_argument("-q", "--quiet", action="store_true")
    a = ap.parse_args()
    if a.patch % 4:
        ap.error("--patch must be a multiple of 4")

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)
    train_ids, _, train_x, train_y = load_split(a.data, "train")
    val_ids, _, val_x, val_y = load_split(a.data, "val")
    n = len(train_ids)
    model = UNet(base=a.base)
    if a.maxpool_grad == "candle":
        model.pool = CandlePool()
    if a.init:
        load_init(model, a.init)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    step_rows, rows = [], []
    global_step = 0
    if not a.quiet:
        print(f"torch {torch.__version__}: {n} train / {len(val_ids)} val slices, "
              f"UNet(base={a.base}), lr {a.lr}, batch {a.batch}, seed {a.seed}", flush=True)
    for epoch in range(1, a.epochs + 1):
        t0 = time.time()
        perm = torch.randperm(n, generator=gen).tolist()
        batches = [perm[i:i + a.batch] for i in range(0, n, a.batch)]
        if a.drop_last and len(batches[-1]) < a.batch:
            batches.pop()
        model.train()
        losses = []
        stopped = False
        for step, b in enumerate(batches, 1):
            xs, ys = zip(*(patch_of(train_x[i], train_y[i], a.patch, gen) for i in b))
            x = torch.from_numpy(np.stack(xs)[:, None])
            y = torch.from_numpy(np.stack(ys)[:, None])
            loss = dice_loss(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            global_step += 1
            losses.append(loss.item())
            step_rows.append({"epoch": epoch, "step": step, "global_step": global_step,
                              "batch": len(b), "loss": losses[-1]})
            if a.max_steps and global_step >= a.max_steps:
                stopped = True
                break
        if stopped and step < len(batches):
            break
        scores = validate(model, val_x, val_y, a.val_batch, a.threshold)
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), **scores,
               "seconds": time.time() - t0}
        rows.append(row)
        write_table(rows, a.out)
        if not a.quiet:
            print(f"epoch {epoch}: train loss {row['train_loss']:.4f} val loss "
                  f"{row['val_loss']:.4f} recall {row['val_recall']:.3f} precision "
                  f"{row['val_precision']:.3f} Dice {row['val_dice']:.3f} "
                  f"({row['seconds']:.0f} s)", flush=True)
        if stopped:
            break
    if rows:
        write_table(rows, a.out)
    if a.steps_out:
        write_table(step_rows, a.steps_out)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Proves a lungseg checkpoint loads into the notebook's PyTorch U-Net (scripts/torch_unet.py)
and, optionally, that PyTorch computes the same probabilities as lungseg did.

lungseg writes safetensors whose tensor names are the PyTorch state_dict keys of the notebook's
UNet (`d1.net.0.weight`, `d1.net.1.running_mean`, ..., `out.bias`) but without the
`num_batches_tracked` buffers of each BatchNorm2d (candle has none); this script inserts
`num_batches_tracked = 0` (int64) for each, then calls `model.load_state_dict(sd, strict=True)`,
so any missing, extra or mis-shaped tensor is an error. The width `base` is inferred from
`d1.net.0.weight` (shape (base, 1, 3, 3)) unless --base is given. Prints the parameter count.

With --input/--expected/--shape it also runs `model.eval()` forward (BatchNorm on running
statistics) on INPUT and compares the sigmoid output with EXPECTED, both raw little-endian
float32 files in C order with shape N,1,H,W (EXPECTED has the same shape as INPUT). It prints
the max abs difference and exits 1 if it exceeds --tol (default 1e-4).

Usage:
    python3 scripts/load_in_pytorch.py CHECKPOINT.safetensors [--base B]
        [--input INPUT.f32 --expected EXPECTED.f32 --shape N,1,H,W] [--tol 1e-4]
        [--device cpu|cuda]
Exit status: 0 ok, 1 outputs differ by more than --tol, 2 checkpoint does not load / bad args.
"""
import argparse
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_unet import UNet, param_count  # noqa: E402


def read_f32(path, shape):
    a = np.fromfile(path, dtype="<f4")
    n = int(np.prod(shape))
    if a.size != n:
        raise ValueError(f"{path}: {a.size} float32 values, shape {shape} needs {n}")
    return torch.from_numpy(a.reshape(shape).astype(np.float32))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--base", type=int)
    ap.add_argument("--input")
    ap.add_argument("--expected")
    ap.add_argument("--shape", help="N,1,H,W of --input and --expected")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    a = ap.parse_args()
    compare = [a.input, a.expected, a.shape]
    if any(compare) and not all(compare):
        ap.error("--input, --expected and --shape go together")

    sd = load_file(a.checkpoint)
    if "d1.net.0.weight" not in sd:
        print(f"error: {a.checkpoint} has no d1.net.0.weight; keys: {sorted(sd)[:8]}...",
              file=sys.stderr)
        sys.exit(2)
    base = a.base if a.base is not None else sd["d1.net.0.weight"].shape[0]
    model = UNet(base=base)
    added = 0
    for name, buf in model.state_dict().items():
        if name.endswith("num_batches_tracked") and name not in sd:
            sd[name] = torch.zeros_like(buf)  # tensor(0, dtype=torch.long)
            added += 1
    for k, v in list(sd.items()):
        if v.dtype != torch.float32 and not k.endswith("num_batches_tracked"):
            print(f"note: {k} is {v.dtype}, converting to float32", file=sys.stderr)
            sd[k] = v.float()
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        print(f"error: load_state_dict(strict=True) failed:\n{e}", file=sys.stderr)
        sys.exit(2)
    print(f"loaded {a.checkpoint}: UNet(base={base}), {param_count(model)} parameters, "
          f"{len(sd) - added} tensors from file (+{added} num_batches_tracked)")

    if not a.input:
        return
    shape = tuple(int(s) for s in a.shape.split(","))
    if len(shape) != 4 or shape[1] != 1:
        ap.error("--shape must be N,1,H,W")
    x = read_f32(a.input, shape)
    expected = read_f32(a.expected, shape)
    dev = torch.device(a.device)
    model.to(dev).eval()
    with torch.inference_mode():
        prob = model(x.to(dev)).cpu()
    diff = (prob - expected).abs().max().item()
    ok = diff <= a.tol
    print(f"forward (eval) on {shape}: max abs diff {diff:.3e} (tol {a.tol:g}) -> "
          f"{'OK' if ok else 'MISMATCH'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

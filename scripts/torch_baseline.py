#!/usr/bin/env python3
"""PyTorch baseline for lungseg's train-step benchmark (`make bench`, GPU check).

Measures the wall time of one training step of the notebook's U-Net (scripts/torch_unet.py):
forward + dice_loss + backward + Adam(lr=1e-4) step, on a fixed random batch of shape
(batch, 1, size, size) with a {0,1} target containing one disc-shaped blob per sample.
Inputs are seeded (--seed, default 0), so runs are repeatable. `--warmup` steps run first and
are not timed; then `--steps` steps are timed individually (CUDA synchronised before and after
each) and the median is reported, with the fastest step and the median process CPU time per
step (all threads; on a shared machine less sensitive to other jobs than wall time, though
OpenMP's spin-waiting counts in it). With `--forward-only` it times inference instead
(model.eval(), torch.inference_mode(), forward only) and reports the same fields.

No data loading is included: this is the compute of the step only.

Usage:
    python3 scripts/torch_baseline.py [--threads N] [--batch 8] [--size 128] [--base 64]
        [--steps K] [--warmup 1] [--device cpu|cuda] [--forward-only] [--seed 0] [--json OUT]

Prints (and writes to OUT if given) one JSON object:
    {"framework": "pytorch", "torch": "<version>", "device": "cpu"|"cuda", "threads": N,
     "batch": 8, "size": 128, "base": 64, "seconds_per_step": <median s>,
     "min_seconds_per_step": <fastest s>, "cpu_seconds_per_step": <median CPU s>,
     "patches_per_s": batch / median, "steps": K, "mode": "train-step"|"forward-only"}
`--threads` defaults to os.cpu_count(); it sets torch.set_num_threads (CPU intra-op threads).
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_unet import UNet, dice_loss  # noqa: E402


def make_batch(batch, size, seed, device):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 1, size, size, generator=g)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    y = torch.zeros(batch, 1, size, size)
    for i in range(batch):
        cy, cx = torch.randint(size // 4, 3 * size // 4, (2,), generator=g).tolist()
        r = int(torch.randint(max(2, size // 32), max(3, size // 8), (1,), generator=g))
        blob = ((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r
        y[i, 0][blob] = 1.0
        x[i, 0][blob] += 0.5  # make the blob visible in the input too
    return x.to(device), y.to(device)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--base", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--forward-only", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="OUT")
    a = ap.parse_args()
    if a.size % 4:
        ap.error("--size must be divisible by 4 (two 2x poolings)")
    if a.steps < 1:
        ap.error("--steps must be >= 1")
    if a.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        sys.exit(2)

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    dev = torch.device(a.device)
    model = UNet(base=a.base).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, y = make_batch(a.batch, a.size, a.seed, dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    if a.forward_only:
        model.eval()

        def step():
            with torch.inference_mode():
                return model(x)
    else:
        model.train()

        def step():
            pred = model(x)
            loss = dice_loss(pred, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss

    for _ in range(a.warmup):
        step()
    sync()
    times, cpu_times = [], []
    for _ in range(a.steps):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        sync()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    med = statistics.median(times)
    out = {
        "framework": "pytorch",
        "torch": torch.__version__,
        "device": a.device,
        "threads": a.threads,
        "batch": a.batch,
        "size": a.size,
        "base": a.base,
        "seconds_per_step": med,
        "min_seconds_per_step": min(times),
        "cpu_seconds_per_step": statistics.median(cpu_times),
        "patches_per_s": a.batch / med,
        "steps": a.steps,
        "mode": "forward-only" if a.forward_only else "train-step",
    }
    s = json.dumps(out)
    print(s)
    if a.json:
        with open(a.json, "w") as f:
            f.write(s + "\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Golden numbers for lungseg's lockstep test (src/train/lockstep_tests.rs): the notebook's U-Net
(scripts/torch_unet.py) trained by plain PyTorch from formula-defined weights on formula-defined
batches, so that the Rust test can rebuild exactly the same start and data without reading any
file.

Everything is defined by integer arithmetic and float64 operations that Rust reproduces bit for
bit (multiplication, division, sqrt), then rounded to float32:

  weights   tensors in sorted state_dict order (num_batches_tracked excluded), t = position:
            element k of a conv weight or bias = bound * (2u - 1), bound = 1/sqrt(fan_in) of the
            conv (C_in * kh * kw), u = ((k * 2654435761 + (t + 1) * 97531) mod 2^32) / 2^32;
            batch-norm weight 1, bias 0, running_mean 0, running_var 1 (PyTorch's defaults).
  batch s   (s = 0, 1, ...; 8 slices of SIZE x SIZE): slice b has a disc of radius
            r = 2 + (s + 2b) mod 5 at (cy, cx) = (6 + (3s + 5b) mod (SIZE - 12),
            6 + (7s + 3b) mod (SIZE - 12)), except slice 7 of every third batch (s mod 3 = 0),
            which is empty; texture = ((13i + 7j + 5b + 3s) mod 17) / 17;
            image = 0.2 + 0.25 * texture outside the disc and 0.55 + 0.35 * (1 - d2 / (r^2 + 1))
            inside (d2 = (i - cy)^2 + (j - cx)^2 <= r^2); mask = 1 inside the disc.

Training: Adam (lr 3e-3, betas 0.9/0.999, eps 1e-8), soft Dice loss pooled over the batch
(smooth 1), model.train(), STEPS steps on batches s = 0 .. STEPS-1. Then model.eval() on batch
s = 1000 (never trained on). Prints the loss of every step, the eval loss, the sum of every
batch-norm running_var, the sum of every running_mean, and the sum of |w| over the trainable
tensors except the convolution biases that feed a batch-norm (their true gradient is zero, so
Adam moves them by rounding noise, differently in any two implementations; the batch-norm that
follows cancels them).

Mutations (to show which checks catch what): --adam-eps, --bn-momentum, --maxpool-grad candle
(candle 0.11's max_pool2d backward), --biased-running-var (running_var updated with the biased
batch variance).

Usage:
    python3 scripts/lockstep_reference.py [--base 4] [--size 32] [--steps 60] [--json OUT]
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from candle_pool import CandlePool  # noqa: E402
from torch_unet import UNet, dice_loss  # noqa: E402


def formula_state(model):
    sd = model.state_dict()
    names = sorted(n for n in sd if not n.endswith("num_batches_tracked"))
    out = {}
    for t, name in enumerate(names):
        v = sd[name]
        if name.endswith("running_mean") or (v.dim() == 1 and is_bn(name) and
                                            name.endswith(".bias")):
            out[name] = torch.zeros_like(v)
        elif name.endswith("running_var") or (v.dim() == 1 and is_bn(name)):
            out[name] = torch.ones_like(v)
        else:
            owner = name.rsplit(".", 1)[0]
            w = sd[owner + ".weight"]
            fan_in = int(np.prod(w.shape[1:]))
            bound = 1.0 / math.sqrt(fan_in)
            k = np.arange(v.numel(), dtype=np.uint64)
            u = ((k * np.uint64(2654435761) + np.uint64((t + 1) * 97531)) % np.uint64(2**32))
            vals = bound * (2.0 * (u.astype(np.float64) / 2.0**32) - 1.0)
            out[name] = torch.from_numpy(vals.astype(np.float32)).reshape(v.shape)
    for name in sd:
        if name.endswith("num_batches_tracked"):
            out[name] = torch.zeros_like(sd[name])
    return out


def is_bn(name):
    return ".net.1." in name or ".net.4." in name


def batch(s, size, n=8):
    x = np.zeros((n, 1, size, size), np.float32)
    y = np.zeros((n, 1, size, size), np.float32)
    i = np.arange(size).reshape(size, 1)
    j = np.arange(size).reshape(1, size)
    for b in range(n):
        texture = ((13 * i + 7 * j + 5 * b + 3 * s) % 17).astype(np.float64) / 17.0
        img = 0.2 + 0.25 * texture
        m = np.zeros((size, size), bool)
        if not (b == 7 and s % 3 == 0):
            r = 2 + (s + 2 * b) % 5
            cy = 6 + (3 * s + 5 * b) % (size - 12)
            cx = 6 + (7 * s + 3 * b) % (size - 12)
            d2 = (i - cy) ** 2 + (j - cx) ** 2
            m = d2 <= r * r
            inside = 0.55 + 0.35 * (1.0 - d2.astype(np.float64) / (r * r + 1))
            img = np.where(m, inside, img)
        x[b, 0] = img.astype(np.float32)
        y[b, 0] = m
    return torch.from_numpy(x), torch.from_numpy(y)


class BiasedRunningVarBN(torch.nn.BatchNorm2d):
    """BatchNorm2d whose running_var takes the biased batch variance (a mutation)."""

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        mean = x.mean(dim=(0, 2, 3))
        var = x.var(dim=(0, 2, 3), unbiased=False)
        with torch.no_grad():
            self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
            self.running_var.mul_(1 - self.momentum).add_(self.momentum * var)
        xn = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps)
        return xn * self.weight[None, :, None, None] + self.bias[None, :, None, None]


def run(a):
    torch.set_num_threads(a.threads)
    model = UNet(base=a.base)
    if a.biased_running_var:
        for mod in list(model.modules()):
            for cname, child in list(mod.named_children()):
                if isinstance(child, torch.nn.BatchNorm2d):
                    setattr(mod, cname, BiasedRunningVarBN(child.num_features))
    model.load_state_dict(formula_state(model), strict=True)
    if a.maxpool_grad == "candle":
        model.pool = CandlePool()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = a.bn_momentum
    opt = torch.optim.Adam(model.parameters(), lr=a.lr, eps=a.adam_eps)
    losses, probes = [], {}
    for s in range(a.steps):
        model.train()
        x, y = batch(s, a.size)
        loss = dice_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if s + 1 in a.probe_steps or s + 1 == a.steps:
            probes[s + 1] = probe(model, a.size)
    return {"losses": losses, "probes": probes}


def probe(model, size):
    """Eval-mode loss on batch 1000 and checksums of the current state."""
    model.eval()
    with torch.no_grad():
        x, y = batch(1000, size)
        eval_loss = dice_loss(model(x), y).item()
    sd = model.state_dict()
    running_var = sum(v.double().sum().item() for n, v in sd.items() if n.endswith("running_var"))
    running_mean = sum(v.double().sum().item() for n, v in sd.items()
                       if n.endswith("running_mean"))
    weights = sum(p.detach().double().abs().sum().item() for n, p in model.named_parameters()
                  if not (n.endswith("net.0.bias") or n.endswith("net.3.bias")))
    return {"eval_loss": eval_loss, "running_var_sum": running_var,
            "running_mean_sum": running_mean, "weight_abs_sum": weights}



def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=int, default=4)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--adam-eps", type=float, default=1e-8)
    ap.add_argument("--bn-momentum", type=float, default=0.1)
    ap.add_argument("--maxpool-grad", choices=["torch", "candle"], default="torch")
    ap.add_argument("--biased-running-var", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--probe-steps", default="8",
                    help="comma-separated steps after which to probe (the last step always is)")
    ap.add_argument("--json")
    a = ap.parse_args()
    a.probe_steps = {int(k) for k in a.probe_steps.split(",") if k}
    r = run(a)
    for k, l in enumerate(r["losses"], 1):
        print(f"step {k:3d} loss {l:.7f}")
    for k, p in sorted(r["probes"].items()):
        print(f"after step {k}: eval loss (batch 1000, model.eval()) {p['eval_loss']:.7f}, "
              f"sum of running_var {p['running_var_sum']:.6f}, sum of running_mean "
              f"{p['running_mean_sum']:.6f}, sum |w| (trainable, without pre-BN conv biases) "
              f"{p['weight_abs_sum']:.6f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The notebook's 2D U-Net (DoubleConv + UNet), verbatim apart from a `base` width parameter,
plus the `dice_loss` the notebook calls but never defines.

This is the PyTorch reference that lungseg's candle port must match: same module tree, hence
the same state_dict names (`d1.net.0.weight`, `d1.net.1.running_mean`, ..., `out.bias`), so
lungseg's safetensors checkpoints load with `load_state_dict(strict=True)` once the
`num_batches_tracked` buffers are added (see scripts/load_in_pytorch.py).

Widths for `UNet(base=b)` (the notebook is b=64):
    d1: 1 -> b, d2: b -> 2b, d3: 2b -> 4b,
    u1: (4b + 2b) -> 2b, u2: (2b + b) -> b, out: b -> 1 (1x1 conv), sigmoid.
Upsampling is nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False).

Usage (as a module):
    from torch_unet import UNet, dice_loss
    model = UNet(base=8); prob = model(x)  # x: (N, 1, H, W), H and W divisible by 4
    loss = dice_loss(prob, target)
Run directly it prints the parameter count for a few widths.
"""
import torch
import torch.nn as nn


class DoubleConv(nn.Module):
    def __init__(self, in_c, out_c):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_c, out_c, 3, padding=1),
            nn.BatchNorm2d(out_c),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_c, out_c, 3, padding=1),
            nn.BatchNorm2d(out_c),
            nn.ReLU(inplace=True)
        )

    def forward(self, x):
        return self.net(x)


# Standard 2D U-Net architecture (the notebook's), widths scaled by `base` (notebook: 64).
class UNet(nn.Module):
    def __init__(self, base=64):
        super().__init__()
        b = base
        self.base = b
        self.d1 = DoubleConv(1, b)
        self.d2 = DoubleConv(b, 2 * b)
        self.d3 = DoubleConv(2 * b, 4 * b)

        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)

        self.u1 = DoubleConv(4 * b + 2 * b, 2 * b)
        self.u2 = DoubleConv(2 * b + b, b)

        self.out = nn.Conv2d(b, 1, 1)

    def forward(self, x):
        c1 = self.d1(x)
        c2 = self.d2(self.pool(c1))
        c3 = self.d3(self.pool(c2))

        u1 = self.up(c3)
        u1 = self.u1(torch.cat([u1, c2], dim=1))

        u2 = self.up(u1)
        u2 = self.u2(torch.cat([u2, c1], dim=1))

        return torch.sigmoid(self.out(u2))


def dice_loss(pred, target, smooth=1.0):
    """Soft Dice loss pooled over the whole batch (all pixels of all samples together):
    1 - (2 * sum(pred * target) + smooth) / (sum(pred) + sum(target) + smooth).
    `pred` are sigmoid probabilities, `target` is {0, 1}."""
    target = target.float()
    intersection = (pred * target).sum()
    return 1 - (2 * intersection + smooth) / (pred.sum() + target.sum() + smooth)


def param_count(model):
    return sum(p.numel() for p in model.parameters())


if __name__ == "__main__":
    for b in (4, 8, 16, 64):
        print(f"UNet(base={b}): {param_count(UNet(base=b))} parameters")

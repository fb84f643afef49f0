"""candle 0.11's max_pool2d gradient in PyTorch, for experiments (issue #17).

candle's backward gives each maximum of a 2x2 window grad * (maxima in the window / 4): a unique
maximum gets a quarter of the gradient that PyTorch gives it. Setting `model.pool = CandlePool()`
on scripts/torch_unet.py's UNet makes a plain PyTorch loop train as lungseg did before it had a
max-pool of its own (scripts/torch_train_reference.py --maxpool-grad candle,
scripts/lockstep_reference.py --maxpool-grad candle).
"""
import torch
import torch.nn.functional as F


class CandleMaxPool2x2(torch.autograd.Function):
    """max_pool2d(2) with candle 0.11's backward: grad * (ties in window / 4) to every tied max."""

    @staticmethod
    def forward(ctx, x):
        y = F.max_pool2d(x, 2)
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        mask = (x == F.interpolate(y, scale_factor=2, mode="nearest")).to(x.dtype)
        return F.interpolate(g * F.avg_pool2d(mask, 2), scale_factor=2, mode="nearest") * mask


class CandlePool(torch.nn.Module):
    def forward(self, x):
        return CandleMaxPool2x2.apply(x)

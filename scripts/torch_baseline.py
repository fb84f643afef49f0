#!/usr/bin/env python3
"""PyTorch baseline for lungseg's train-step benchmark (`make bench`, GPU check).

Measures the wall time of one training step of the notebook's U-Net (scripts/torch_unet.py):
forward + dice_loss + backward + Adam(lr=1e-4) step, on a fixed random batch of shape
(batch, 1, size, size) with a {0,1} target containing one disc-shaped blob per sample.
Inputs are seeded (--seed, default 0), so runs are repeatable. `--warmup` steps run first and
are not timed; then `--steps` steps are timed individually (CUDA synchronised before reading
the clock at the start and at the end of each) and the median is reported, with the fastest
step and the median process CPU time per step (all threads; on a shared machine less
sensitive to other jobs than wall time, though OpenMP's spin-waiting counts in it). With
`--forward-only` it times inference instead (model.eval(), torch.inference_mode(), forward
only) and reports the same fields.

No data loading is included: this is the compute of the step only.

Two variants:
  * default ("eager-default"): eager fp32 with PyTorch's defaults, exactly as a plain training
    loop runs (cudnn.benchmark off; cuDNN may use TF32 for convolutions, PyTorch's default,
    reported as "tf32_conv"/"tf32_matmul"; Adam's default implementation).
  * `--fast` ("fast"): the fastest practical PyTorch: torch.backends.cudnn.benchmark = True,
    model and inputs in channels_last, torch.autocast(device, bfloat16) around forward + loss
    (the loss is computed on the prediction cast to fp32), Adam(fused=True) (foreach=True
    where fused is unsupported; see "adam_impl"), and torch.compile(model) unless
    `--no-compile`. If compilation or the first compiled step fails, the run falls back to
    eager (model and optimizer rebuilt from the same seed) and reports "compiled": false with
    the error's first line in "compile_error".
`--compile` without `--fast` compiles the otherwise default fp32 model ("compiled-default").
When compiling, the first step (which compiles) is always run untimed and counts as one of
the `--warmup` steps (it runs even with --warmup 0).

Usage:
    python3 scripts/torch_baseline.py [--threads N] [--batch 8] [--size 128] [--base 64]
        [--steps K] [--warmup 1] [--device cpu|cuda] [--forward-only] [--seed 0] [--json OUT]
        [--fast] [--compile | --no-compile] [--compile-mode MODE]

Prints (and writes to OUT if given) one JSON object:
    {"framework": "pytorch", "torch": "<version>", "device": "cpu"|"cuda", "threads": N,
     "batch": 8, "size": 128, "base": 64, "seconds_per_step": <median s>,
     "min_seconds_per_step": <fastest s>, "cpu_seconds_per_step": <median CPU s>,
     "patches_per_s": batch / median, "steps": K, "mode": "train-step"|"forward-only",
     "variant": "eager-default"|"fast"|"compiled-default", "warmup": W,
     "compiled": bool, "compile_requested": bool, "compile_mode": str|null,
     "compile_error": str|null, "first_step_seconds": <s, the first untimed step: the compile
     when "compiled", else an eager step (null with --warmup 0 and no compile)>,
     "autocast_dtype": "bfloat16"|null, "channels_last": bool, "cudnn_benchmark": bool,
     "adam_impl": "fused"|"foreach"|"for-loop"|null (null with --forward-only),
     "adam_fallback_error": str|null, "tf32_conv": bool, "tf32_matmul": bool,
     "peak_allocated_bytes": int|null, "peak_reserved_bytes": int|null, "gpu": str|null}
"peak_*_bytes" are torch.cuda.max_memory_allocated()/max_memory_reserved() over the timed
steps (peak stats reset after warm-up); null on CPU. "gpu" is the CUDA device name.
`--threads` defaults to os.cpu_count(); it sets torch.set_num_threads (CPU intra-op threads).
"""
import argparse
import contextlib
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


def first_line(e, limit=300):
    """`Type: first line of the message`, for the JSON (compile errors can be pages long)."""
    lines = [l for l in str(e).strip().splitlines() if l.strip()]
    s = f"{type(e).__name__}: {lines[0].strip() if lines else ''}".rstrip(": ")
    return s if len(s) <= limit else s[: limit - 3] + "..."


def default_adam_impl(params):
    """Which implementation torch.optim.Adam picks when given neither fused nor foreach."""
    try:
        from torch.optim.optimizer import _default_to_fused_or_foreach
        fused, foreach = _default_to_fused_or_foreach(list(params), False, False)
        return "fused" if fused else ("foreach" if foreach else "for-loop")
    except Exception:  # private helper; its signature may change between releases
        return "default"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="torch.set_num_threads (CPU intra-op threads; default: os.cpu_count())")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=128, help="patch side, divisible by 4 (default: 128)")
    ap.add_argument("--base", type=int, default=64, help="U-Net base width (default: 64, the notebook's)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps; the median is reported (default: 10)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps before timing (default: 1)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--forward-only", action="store_true",
                    help="time inference (eval mode, inference_mode, forward only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="OUT", help="also write the JSON line to OUT")
    ap.add_argument("--fast", action="store_true",
                    help='"fastest practical PyTorch" variant: cudnn.benchmark, channels_last, '
                         "bfloat16 autocast around forward+loss, Adam(fused=True) (foreach "
                         "fallback), and torch.compile unless --no-compile (falls back to "
                         'eager on failure, reported as "compiled": false)')
    cg = ap.add_mutually_exclusive_group()
    cg.add_argument("--compile", dest="compile", action="store_true", default=None,
                    help="torch.compile the model (default under --fast; without --fast it "
                         'compiles the fp32 default variant, "compiled-default")')
    cg.add_argument("--no-compile", dest="compile", action="store_false",
                    help="skip torch.compile (e.g. --fast on CPU, where compiling is slow)")
    ap.add_argument("--compile-mode", default=None,
                    choices=["default", "reduce-overhead", "max-autotune",
                             "max-autotune-no-cudagraphs"],
                    help="mode= for torch.compile (default: not passed, PyTorch's default)")
    a = ap.parse_args()
    if a.size % 4:
        ap.error("--size must be divisible by 4 (two 2x poolings)")
    if a.steps < 1:
        ap.error("--steps must be >= 1")
    if a.warmup < 0:
        ap.error("--warmup must be >= 0")
    if a.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        sys.exit(2)

    fast = a.fast
    want_compile = a.compile if a.compile is not None else fast
    if a.compile_mode is not None and not want_compile:
        ap.error("--compile-mode needs compilation (--fast or --compile, not --no-compile)")
    variant = "fast" if fast else ("compiled-default" if want_compile else "eager-default")

    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    if fast:
        torch.backends.cudnn.benchmark = True
    mem_fmt = torch.channels_last if fast else torch.contiguous_format
    x, y = make_batch(a.batch, a.size, a.seed, dev)
    if fast:
        x = x.contiguous(memory_format=mem_fmt)
        y = y.contiguous(memory_format=mem_fmt)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def autocast():
        if fast:
            return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()  # default variant: no autocast context at all

    info = {"adam_impl": None, "adam_fallback_error": None}

    def build(compile_it):
        """Model, optimizer and step function, from the seed (rebuilt on compile fallback)."""
        torch.manual_seed(a.seed)
        model = UNet(base=a.base).to(dev)
        if fast:
            model = model.to(memory_format=mem_fmt)
        opt = None
        if not a.forward_only:
            params = list(model.parameters())
            if fast:
                try:
                    opt = torch.optim.Adam(params, lr=1e-4, fused=True)
                    info["adam_impl"] = "fused"
                except (RuntimeError, TypeError, ValueError) as e:
                    opt = torch.optim.Adam(params, lr=1e-4, foreach=True)
                    info["adam_impl"] = "foreach"
                    info["adam_fallback_error"] = first_line(e)
            else:
                opt = torch.optim.Adam(params, lr=1e-4)
                info["adam_impl"] = default_adam_impl(params)
        net = model
        if compile_it:
            kw = {} if a.compile_mode is None else {"mode": a.compile_mode}
            net = torch.compile(model, **kw)  # lazy: errors surface at the first call

        if a.forward_only:
            model.eval()

            def step():
                with torch.inference_mode(), autocast():
                    return net(x)
        else:
            model.train()

            def step():
                with autocast():
                    pred = net(x)
                    loss = dice_loss(pred.float() if fast else pred, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                return loss
        return step

    compiled, compile_error = False, None
    step = None
    if want_compile:
        try:
            step = build(True)
            sync()
            t0 = time.perf_counter()
            step()  # compiles forward (and backward) and runs one step
            sync()
            first_step = time.perf_counter() - t0
            compiled = True
        except Exception as e:  # compile/lowering/codegen/first-run failure: fall back to eager
            compile_error = first_line(e)
            print(f"torch_baseline: torch.compile failed, falling back to eager: {compile_error}",
                  file=sys.stderr)
            try:
                torch._dynamo.reset()
            except Exception:
                pass
            step = None
    if step is None:
        step = build(False)
        sync()
        t0 = time.perf_counter()
        if a.warmup > 0:
            step()
        sync()
        first_step = time.perf_counter() - t0 if a.warmup > 0 else None
    for _ in range(max(0, a.warmup - 1)):
        step()
    sync()

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times, cpu_times = [], []
    for _ in range(a.steps):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        sync()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    peak_alloc = peak_res = None
    if dev.type == "cuda":
        peak_alloc = torch.cuda.max_memory_allocated(dev)
        peak_res = torch.cuda.max_memory_reserved(dev)
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
        "variant": variant,
        "warmup": a.warmup,
        "compiled": compiled,
        "compile_requested": bool(want_compile),
        "compile_mode": a.compile_mode,
        "compile_error": compile_error,
        "first_step_seconds": first_step,
        "autocast_dtype": "bfloat16" if fast else None,
        "channels_last": fast,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "adam_impl": info["adam_impl"],
        "adam_fallback_error": info["adam_fallback_error"],
        "tf32_conv": torch.backends.cudnn.allow_tf32,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "peak_allocated_bytes": peak_alloc,
        "peak_reserved_bytes": peak_res,
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
    }
    s = json.dumps(out)
    print(s)
    if a.json:
        with open(a.json, "w") as f:
            f.write(s + "\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Prints BENCHMARKS.md's GPU section from scripts/gpu-check.sh's results in docs/gpu/ (copied
there from the device tool's $OUT), followed by docs/gpu/changes.md, the predicted and measured
effect of each GPU change. bench_report.py includes it; run alone to refresh that section:
    python3 scripts/gpu_report.py            (GPU_RESULTS=DIR reads another folder)"""
import json
import os

GPU_DIR = os.environ.get("GPU_RESULTS") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "gpu")


def jsonl(name):
    try:
        return [json.loads(l) for l in open(os.path.join(GPU_DIR, name)) if l.strip().startswith("{")]
    except OSError:
        return []


def one(name):
    rows = jsonl(name)
    return rows[0] if rows else None


def mb(v):
    return "-" if v is None else f"{v / 2**20:.0f}"


def path(c):
    conv = c.get("conv", "?")
    if conv == "fast-backward":  # rows from before the cuDNN path
        conv = "candle ops"
    label = f"{conv}, {c['precision']}" if "precision" in c else conv
    return f"{label}, synchronised phases" if c.get("phase_ms") else label


def main():
    candle = jsonl("candle-cuda.json")
    torch = jsonl("torch-cuda.json")
    if not (candle and torch):
        return
    meta = open(os.path.join(GPU_DIR, "measured.txt")).read().strip().splitlines()
    meta = dict(l.split(": ", 1) for l in meta if ": " in l)
    print("## GPU (CUDA)\n")
    print(f"Measured by `scripts/gpu-check.sh` on {meta.get('date', '?')}, {meta.get('device', '?')}, "
          f"revision {meta.get('revision', '?')}; raw results in `docs/gpu/`. Not re-measured by `make bench` "
          "(this machine has no GPU). Batch 8, 128x128, median of 20 steps after 3 warm-up steps; "
          "candle and PyTorch on the same GPU in the same call. PyTorch eager uses its defaults "
          "(fp32, cuDNN with TF32 convolutions).\n")
    eager = [t for t in torch if t.get("variant", "eager-default") == "eager-default"]
    print("| width | mode | lungseg path | lungseg ms/step | PyTorch eager ms/step | lungseg / PyTorch throughput | peak MB lungseg / PyTorch |")
    print("|---|---|---|---|---|---|---|")
    for c in candle:
        t = next((t for t in eager if t["base"] == c["base"] and t["mode"] == c["mode"]), None)
        if t:
            print(f"| {c['base']} | {c['mode']} | {path(c)} | {c['seconds_per_step'] * 1e3:.1f} | "
                  f"{t['seconds_per_step'] * 1e3:.1f} | {t['seconds_per_step'] / c['seconds_per_step']:.2f}x | "
                  f"{mb(c.get('peak_pool_bytes'))} / {mb(t.get('peak_reserved_bytes'))} |")
    for c in candle:
        if c.get("phase_ms"):
            p = c["phase_ms"]
            print(f"\nWhere a width-{c['base']} step goes ({path(c)}): forward + loss {p['forward_loss']:.1f} ms, "
                  f"backward {p['backward']:.1f} ms, Adam {p['optimizer']:.1f} ms.")
    fast = [t for t in torch if t.get("variant") == "fast"]
    if fast:
        print("\nAgainst the fastest practical PyTorch (`--fast`: cudnn.benchmark, channels_last, bf16 "
              "autocast, fused Adam, torch.compile where it works), lungseg's fastest row of the same "
              "width and mode:\n")
        print("| width | mode | PyTorch fast | compiled | PyTorch ms/step | lungseg best ms/step | lungseg / PyTorch |")
        print("|---|---|---|---|---|---|---|")
        for t in fast:
            mine = [c for c in candle if c["base"] == t["base"] and c["mode"] == t["mode"]
                    and not c.get("phase_ms")]
            if mine:
                best = min(mine, key=lambda c: c["seconds_per_step"])
                print(f"| {t['base']} | {t['mode']} | {t.get('adam_impl') or '-'} Adam, {t.get('autocast_dtype')} | "
                      f"{t.get('compiled')} | {t['seconds_per_step'] * 1e3:.1f} | "
                      f"{best['seconds_per_step'] * 1e3:.1f} ({path(best)}) | "
                      f"{t['seconds_per_step'] / best['seconds_per_step']:.2f}x |")
    full = one("full-size.json")
    if full:
        print(f"\nFull-size run (875 synthetic patients, defaults: width 64, batch 8, 3 epochs with "
              f"validation): {full['train_seconds']:.0f} s, projected {full['projected_20_epochs_seconds'] / 60:.1f} "
              f"min for 20 epochs; GPU utilisation {full['gpu_util_mean']:.0f}% on average "
              f"({full['gpu_util_mean_while_busy']:.0f}% while busy), up to {full['gpu_memory_used_max_mib']:.0f} MiB.")
    same = one("same-seed.json")
    if same:
        print(f"\nSame seed and settings on CPU and CUDA (strict f32, a short width-8 run): validation "
              f"Dice {same['dice_cpu']:.3f} on CPU and {same['dice_cuda']:.3f} on CUDA "
              f"(tolerance {same['tolerance']}).")
    st = one("stream-cuda.json")
    if st:
        print(f"\nStreaming shards to CUDA batches: {st['patches_per_s']:.0f} patches/s on the node.")
    if all("precision" not in c for c in candle):
        print("\nThese rows predate the cuDNN path: candle 0.11 ran the convolutions (its conv backward "
              "through a naive transposed convolution) and every other op. The cuDNN build "
              "(`src/model/gpu/`) has not run on a GPU yet; its predicted effect is below.")
    print()
    try:
        print(open(os.path.join(GPU_DIR, "changes.md")).read())
    except OSError:
        pass


if __name__ == "__main__":
    main()

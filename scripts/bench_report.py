#!/usr/bin/env python3
"""Turns scripts/bench.sh's results.jsonl into BENCHMARKS.md (ratios against baselines measured
in the same run). Usage: bench_report.py RESULTS.jsonl THREADS > BENCHMARKS.md"""
import datetime
import json
import platform
import subprocess
import sys

rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows[r["name"]] = r
threads = sys.argv[2]


def out(name, key):
    r = rows.get(name)
    return None if r is None or not isinstance(r.get("stdout"), dict) else r["stdout"].get(key)


def cpu():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
print("# Benchmarks\n")
print(f"Measured by `make bench` (`scripts/bench.sh`) on {datetime.date.today()}, revision {rev}, "
      f"{cpu()}, {threads} threads. Every ratio compares two numbers from the same run on the same "
      "machine. Raw results: `$BENCH_DIR/results.jsonl`.\n")

print("## prepare\n")
seed = rows.get("seed_loader")
p1 = rows.get("prepare_1x")
p10 = rows.get("prepare_10x")
seed_slices = out("seed_loader", "slices_seen")
if seed and p1 and seed_slices:
    seed_rate = seed_slices / out("seed_loader", "seconds")
    ours = seed_slices / p1["wall_s"]
    print("| | slices | wall s | slices/s | peak RSS MB |\n|---|---|---|---|---|")
    print(f"| notebook loader loop (`scripts/seed_loader.py`, cv2 + numpy, load only) | {seed_slices} | {out('seed_loader', 'seconds'):.2f} | {seed_rate:.0f} | {seed['max_rss_mb']:.0f} |")
    print(f"| `lungseg prepare` (decode, fuse, write zstd Parquet) | {seed_slices} | {p1['wall_s']:.2f} | {ours:.0f} | {p1['max_rss_mb']:.0f} |")
    if p10:
        print(f"| `lungseg prepare`, 10x tree | ~{seed_slices * 10} | {p10['wall_s']:.2f} | {seed_slices * 10 / p10['wall_s']:.0f} | {p10['max_rss_mb']:.0f} |")
    print(f"\n**prepare / notebook loop: {ours / seed_rate:.2f}x** slices per second (target >= 5x). "
          f"Peak RSS {p1['max_rss_mb']:.0f} MB at 1x and {p10['max_rss_mb'] if p10 else float('nan'):.0f} MB at 10x (target <= 300 MB, flat). "
          "The notebook loop keeps every slice in memory, so its RSS grows with the tree.\n")

print("## Train step (batch 8, 128x128, forward + backward + Adam)\n")
print("| width | candle s/step | candle s/step, candle's own conv backward | PyTorch s/step | candle / PyTorch throughput | fast / reference conv backward | candle fwd s | PyTorch fwd s |\n|---|---|---|---|---|---|---|---|")
for base in (8, 64):
    c = out(f"candle_step_b{base}", "seconds_per_step")
    cr = out(f"candle_refconv_step_b{base}", "seconds_per_step")
    t = out(f"torch_step_b{base}", "seconds_per_step")
    cf = out(f"candle_fwd_b{base}", "seconds_per_step")
    tf = out(f"torch_fwd_b{base}", "seconds_per_step")
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
    ratio = "n/a" if (c is None or t is None) else f"{t / c:.2f}x"
    speedup = "n/a" if (c is None or cr is None) else f"{cr / c:.2f}x"
    print(f"| {base} | {fmt(c)} | {fmt(cr)} | {fmt(t)} | {ratio} | {speedup} | {fmt(cf)} | {fmt(tf)} |")
print(f"\nPyTorch: {out('torch_step_b64', 'torch') or 'not measured'}. A ratio below 1 means candle is slower.\n")

print("## Streaming (shards -> device-ready patch batches)\n")
s = rows.get("stream")
if s:
    print(f"{out('stream', 'patches'):.0f} patches in {out('stream', 'seconds'):.2f} s: "
          f"**{out('stream', 'patches_per_s'):.0f} patches/s** (target >= 5,000), peak RSS {s['max_rss_mb']:.0f} MB.\n")

print("## Training memory\n")
print("| data | peak RSS MB | wall s |\n|---|---|---|")
for name, r in rows.items():
    if name.startswith("train_rss_"):
        print(f"| {name.removeprefix('train_rss_')} patients | {r['max_rss_mb']:.0f} | {r['wall_s']:.1f} |")
print("\nOne epoch of 20 steps at width 8 plus a full validation pass; the loader streams row groups, "
      "so memory should not grow with the data.\n")
print("""## Notes

- **prepare** misses its 5x target. It is CPU-bound: decoding on the pool and compression on the
  writer thread together keep both cores busy. `perf` puts about a third of the CPU in zstd (level 1)
  compressing the f32 pixel column, about 15% in PNG inflate, and page faults and allocation next.
  The notebook loop decodes only: it writes and compresses nothing and keeps every slice in RAM.
  Reaching 5x would need well under half the current CPU per slice, which compressed f32 shards do
  not leave room for. Next steps: reuse the per-slice buffers, and store 8-bit sources at 8 bits.
- **Train step**: candle 0.11 on CPU stays 5-7x slower than PyTorch's oneDNN kernels. lungseg's own
  conv2d backward (`src/model/fast_conv.rs`: im2col grad-input, shift-gemm grad-weight) is the
  "fast / reference" column; the forward pass and BatchNorm are still candle's.
- **GPU**: `scripts/gpu-check.sh` (CUDA tests, a 2-epoch run, candle vs PyTorch on the GPU) is ready
  but has not run yet: the task that wrote this file was not lent a GPU. Build its bundle with
  `bash scripts/gpu-bundle.sh` and carry `.gpu/`.
- Streaming and prepare figures depend on the page cache; the script warms it before measuring.
""")
print("## Reproduce\n\n```sh\nmake bench                       # full run, rewrites this file\nBENCH_SMALL=1 make bench         # smoke run\nBENCH_SKIP_TORCH=1 make bench    # without the PyTorch baseline\n```")

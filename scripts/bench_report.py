#!/usr/bin/env python3
"""Turns scripts/bench.sh's results.jsonl into BENCHMARKS.md (ratios against baselines measured
in the same run), followed by the sections under docs/bench/. Run from the repository root.
Usage: bench_report.py RESULTS.jsonl THREADS > BENCHMARKS.md"""
import datetime
import os
import re
import statistics
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


def rounds(prefix):
    """Results of the interleaved rounds PREFIX_r1, PREFIX_r2, ... in round order."""
    names = sorted((k for k in rows if re.fullmatch(re.escape(prefix) + r"_r\d+", k)),
                   key=lambda k: int(k.rsplit("_r", 1)[1]))
    return [rows[k] for k in names]


print("Interleaved rounds on the same tree, warm page cache; medians, with the range over rounds. "
      "prepare's **stage time** is its own timer (walk, decode, fuse, write shards, manifest and "
      "rejects; `counts.seconds` in prepare.json), the counterpart of the notebook loop's own timer "
      "(the loop alone, without interpreter start-up or imports). **Process wall** is the whole "
      "`lungseg prepare` command under `/usr/bin/time`. The notebook loop writes nothing; prepare "
      "writes every shard and table.\n")
print("| tree | | median s | range s | slices/s | vs notebook loop | shards MB | peak RSS MB |\n"
      "|---|---|---|---|---|---|---|---|")
headline = {}
rss = {}
for tag in ("1x", "10x"):
    seed_runs = rounds(f"seed_loader_{tag}")
    if not seed_runs:
        continue
    slices = seed_runs[0]["stdout"]["slices_seen"]
    seed_s = [r["stdout"]["seconds"] for r in seed_runs]
    seed_med = statistics.median(seed_s)
    label = f"{slices} slices, {len(seed_runs)} rounds"
    print(f"| {label} | notebook loader loop (`scripts/seed_loader.py`: cv2 + numpy, load only) | "
          f"{seed_med:.3f} | {min(seed_s):.3f}-{max(seed_s):.3f} | {slices / seed_med:.0f} | 1.00x | - | "
          f"{statistics.median(r['max_rss_mb'] for r in seed_runs):.0f} |")
    for codec, name in (("none", "image column plain (default)"), ("zstd", "`--image-compression zstd`")):
        runs = rounds(f"prepare_{codec}_{tag}")
        stages = [rows.get(f"prepare_{codec}_{tag}_r{i + 1}_stage") for i in range(len(runs))]
        if not runs or not all(stages):
            continue
        stage_s = [st["stdout"]["seconds"] for st in stages]
        wall_s = [r["wall_s"] for r in runs]
        mb = stages[0]["stdout"]["bytes"] / 1e6
        rss[(codec, tag)] = max(r["max_rss_mb"] for r in runs)
        for what, vals in (("stage time", stage_s), ("process wall", wall_s)):
            med = statistics.median(vals)
            print(f"| {label} | `lungseg prepare`, {name}, {what} | {med:.3f} | {min(vals):.3f}-{max(vals):.3f} | "
                  f"{slices / med:.0f} | **{seed_med / med:.2f}x** | {mb:.1f} | {rss[(codec, tag)]:.0f} |")
            headline[(codec, tag, what)] = seed_med / med
        per_round = [a / b for a, b in zip(seed_s, stage_s)]
        headline[(codec, tag, "rounds")] = (min(per_round), max(per_round), slices)
print()
for tag in ("1x", "10x"):
    if ("none", tag, "stage time") in headline:
        lo, hi, n = headline[("none", tag, "rounds")]
        print(f"- **{n} slices: prepare / notebook loop {headline[('none', tag, 'stage time')]:.2f}x** by stage "
              f"time (per-round {lo:.2f}-{hi:.2f}x; {headline[('none', tag, 'process wall')]:.2f}x by "
              "process wall). Target >= 5x.")
for tag in ("1x", "10x"):
    cpu_runs = {"the notebook loop": rounds(f"seed_loader_{tag}"), "prepare": rounds(f"prepare_none_{tag}")}
    if all(runs and "user_s" in runs[0] for runs in cpu_runs.values()):
        n = headline.get(("none", tag, "rounds"), (0, 0, "?"))[2]
        parts = []
        for who, runs in cpu_runs.items():
            user = [r["user_s"] for r in runs]
            system = [r["sys_s"] for r in runs]
            parts.append(f"{who} user {statistics.median(user):.2f} s ({min(user):.2f}-{max(user):.2f}), "
                         f"system {statistics.median(system):.2f} s ({min(system):.2f}-{max(system):.2f})")
        print(f"- CPU per run at {n} slices, median (range): " + "; ".join(parts) + ".")
if ("zstd", "1x", "stage time") in headline:
    print(f"- With the image column zstd-compressed as well: {headline[('zstd', '1x', 'stage time')]:.2f}x "
          "on the small tree.")
if ("none", "1x") in rss and ("none", "10x") in rss:
    print(f"- Peak RSS of prepare {rss[('none', '1x')]:.0f} MB at 1x and {rss[('none', '10x')]:.0f} MB at 10x "
          "(target <= 300 MB, flat). The notebook loop keeps every slice in memory, so its RSS grows "
          "with the tree.")
print()

print("## Train step and eval forward (batch 8, 128x128)\n")
print("Train step: forward + Dice loss + backward + Adam. Eval forward: the model in evaluation "
      "mode, no gradient recorded (candle: `forward_t(x, false)`; PyTorch: `model.eval()` and "
      "`torch.inference_mode()`). Interleaved rounds: in each, lungseg and then PyTorch run on the "
      "same number of threads. Seconds per step are each run's median step; the table gives the "
      "median over rounds and the range; **speed** is PyTorch's time over lungseg's (above 1: "
      "lungseg is faster), from the medians and per round. CPU s is the median process CPU time "
      "per step (all threads; PyTorch's includes OpenMP spin-waiting). Peak RSS is the largest "
      "of the rounds, model and data included.\n")
print("| width | threads | mode | lungseg s | PyTorch s | speed | speed per round | lungseg CPU s | "
      "PyTorch CPU s | lungseg peak RSS MB | PyTorch peak RSS MB |\n|---|---|---|---|---|---|---|---|---|---|---|")


def step_runs(who, mode, base, t):
    return [r for r in rounds(f"{who}_{mode}_b{base}_t{t}") if isinstance(r.get("stdout"), dict)]


thread_counts = sorted({int(k.split("_t")[1].split("_")[0]) for k in rows
                        if re.fullmatch(r"candle_(step|fwd)_b\d+_t\d+_r\d+", k)})
speeds = {}
for base in (8, 64):
    for t in thread_counts:
        for mode, label in (("step", "train step"), ("fwd", "eval forward")):
            c, p = step_runs("candle", mode, base, t), step_runs("torch", mode, base, t)
            if not c:
                continue
            cs = [r["stdout"]["seconds_per_step"] for r in c]
            ps = [r["stdout"]["seconds_per_step"] for r in p]
            fmt = lambda v: f"{statistics.median(v):.3f} ({min(v):.3f}-{max(v):.3f})" if v else "n/a"
            cpu = lambda runs: (f"{statistics.median(r['stdout'].get('cpu_seconds_per_step', float('nan')) for r in runs):.3f}"
                                if runs else "n/a")
            rss = lambda runs: f"{max(r['max_rss_mb'] for r in runs):.0f}" if runs else "n/a"
            if ps:
                speed = statistics.median(ps) / statistics.median(cs)
                per_round = [b["stdout"]["seconds_per_step"] / a["stdout"]["seconds_per_step"]
                             for a, b in zip(c, p)]
                speeds[(base, t, mode)] = (speed, min(per_round), max(per_round))
                sp, spr = f"**{speed:.2f}x**", f"{min(per_round):.2f}-{max(per_round):.2f}x"
            else:
                sp, spr = "n/a", "n/a"
            print(f"| {base} | {t} | {label} | {fmt(cs)} | {fmt(ps)} | {sp} | {spr} | {cpu(c)} | {cpu(p)} | "
                  f"{rss(c)} | {rss(p)} |")
print(f"\nPyTorch: {out('torch_step_b64_t1_r1', 'torch') or 'not measured'}.\n")
used = {}
if thread_counts and max(thread_counts) > 1:
    t = max(thread_counts)
    for who, label in (("candle", "lungseg"), ("torch", "PyTorch")):
        ratios = [r["stdout"]["cpu_seconds_per_step"] / r["stdout"]["seconds_per_step"]
                  for base in (8, 64) for mode in ("step", "fwd") for r in step_runs(who, mode, base, t)
                  if r["stdout"].get("cpu_seconds_per_step")]
        if ratios:
            used[label] = statistics.median(ratios)
    if used:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in used.items())
        print(f"- Cores in use at {t} threads (CPU seconds over wall seconds per step, median over the "
              f"{t}-thread runs): {parts}; {t} idle cores would allow up to {t}.")
        if used.get("lungseg", t) < 0.75 * t:
            def cpu_growth(who, base):
                one = [r["stdout"].get("cpu_seconds_per_step") for r in step_runs(who, "step", base, 1)]
                many = [r["stdout"].get("cpu_seconds_per_step") for r in step_runs(who, "step", base, t)]
                if not one or not many or None in one + many:
                    return "n/a"
                return f"{statistics.median(many) / statistics.median(one):.2f}x"
            growth = "; ".join(f"width {b}: lungseg {cpu_growth('candle', b)}, PyTorch {cpu_growth('torch', b)}"
                               for b in (8, 64))
            print(f"  **These {t}-thread rows did not get {t} free cores**: other jobs on this shared "
                  "machine held the rest, so they compare the two frameworks under contention, not on "
                  f"{t} idle cores. CPU seconds per train step at {t} threads over 1 thread ({growth}) "
                  "show how much each framework's threading costs there. The 1-thread rows are the "
                  "fairer comparison of this run.")
    print()
for base in (8, 64):
    ref = out(f"candle_ref_step_b{base}", "seconds_per_step")
    fused = [r["stdout"]["seconds_per_step"] for r in step_runs("candle", "step", base, max(thread_counts or [0]))]
    if ref and fused:
        print(f"- Width {base}: candle's reference ops (`--kernels candle-reference`: candle's conv2d, "
              f"candle-nn BatchNorm, composed upsampling) take {ref:.3f} s per step on "
              f"{max(thread_counts)} threads, {ref / statistics.median(fused):.1f}x the fused kernels' "
              f"{statistics.median(fused):.3f} s (one run, not interleaved).")
print()

print("### Each fused kernel alone (`lungseg-bench layers`)\n")
print("The kernels of one training step on the U-Net's own shapes, each timed alone (minimum of 3 runs "
      "after a warm-up): CPU seconds summed over the step's layers; for the convolutions also the "
      "GFLOP per CPU-second of the forward pass and of the weight gradient, per layer.\n")
layer_runs = {base: rows.get(f"layers_b{base}", {}).get("stdout") for base in (8, 64)}
kinds = sorted({k for v in layer_runs.values() if isinstance(v, dict) for k in v["kernels"]})
if kinds:
    print("| kernel | " + " | ".join(f"width {b} CPU ms" for b in (8, 64)) + " |\n|---|---|---|")
    for k in kinds:
        cells = []
        for b in (8, 64):
            v = layer_runs[b]
            cells.append(f"{v['kernels'][k]['cpu_s'] * 1e3:.1f}" if isinstance(v, dict) and k in v["kernels"] else "n/a")
        print(f"| {k} | " + " | ".join(cells) + " |")
    print()
    for b in (8, 64):
        v = layer_runs[b]
        if isinstance(v, dict):
            convs = ", ".join(f"{c['layer']} {c['forward_gflop_per_cpu_s']:.0f}/{c['grad_weight_gflop_per_cpu_s']:.0f}"
                              for c in v["convolutions"])
            print(f"- Width {b} ({v['isa']}, {v['threads']} threads), GFLOP per CPU-second forward/weight "
                  f"gradient: {convs}.")
    print()

print("## Streaming (shards -> device-ready patch batches)\n")
for name, label in (("stream", "plain image column (default)"), ("stream_zstd", "zstd image column")):
    r = rows.get(name)
    if r:
        print(f"- {label}: {out(name, 'patches'):.0f} patches in {out(name, 'seconds'):.2f} s: "
              f"**{out(name, 'patches_per_s'):.0f} patches/s** (target >= 5,000), peak RSS {r['max_rss_mb']:.0f} MB.")
print()

print("## Training memory\n")
print("| data | peak RSS MB | wall s |\n|---|---|---|")
for name, r in rows.items():
    if name.startswith("train_rss_"):
        print(f"| {name.removeprefix('train_rss_')} patients | {r['max_rss_mb']:.0f} | {r['wall_s']:.1f} |")
print("\nOne epoch of 20 steps at width 8 plus a full validation pass; the loader streams row groups, "
      "so memory should not grow with the data.\n")
# The GPU section: scripts/gpu-check.sh's results in docs/gpu/ (scripts/gpu_report.py).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_report  # noqa: E402

gpu_report.main()

print("## Notes\n")
if thread_counts and max(thread_counts) > 1 and used.get("lungseg", max(thread_counts)) < 0.75 * max(thread_counts):
    print(f"- **This run shared the machine**: at {max(thread_counts)} threads lungseg's train steps used "
          f"{used['lungseg']:.2f} cores (CPU over wall seconds). Wall-clock figures of multi-threaded work "
          "(prepare's stage time, the train steps) are then lower than on idle cores; CPU seconds per run "
          "or step stay comparable across runs.")
print("""- **prepare** is CPU-bound on both cores: ~0.33 CPU-seconds for 2,114 slices, of which the shard
  writer thread takes ~27% (two copies of every pixel inside Parquet's page encoder and page
  assembly, zstd of the mask columns, the kernel's page-cache writes) and the decoding threads
  the rest: PNG inflate ~20% (fdeflate; on these files libdeflate and miniz_oxide, built with
  full optimisation, take 37 and 59 us per image against fdeflate's 26 us), unfiltering ~8%,
  intensity mapping ~3%, opening and reading 5 files per slice ~7%, the walk ~5%. The notebook
  loop only decodes: it writes nothing.
- **Why the 2k-slice rounds scatter more than the 20k ones.** A 2k-slice run lasts ~0.2 s and
  first-touches ~45 MB of heap, which the kernel must clear. This VM (Firecracker, nested
  virtualisation, free page reporting on) hands freed guest memory back to the host, so how much
  a cleared page costs depends on what ran before: `perf record` on bench-like rounds puts
  `clear_page_erms` at 5% of a 0.21 s round and 20% of a 0.29 s one, and across rounds prepare's
  user time stays within 0.18-0.26 s while its system time ranges 0.09-0.43 s (the CPU line
  above shows this run's ranges). On the 20k tree the same fixed costs are spread over ten times
  the work.
- From 1.7x to 4x (earlier): the f32 image column is stored plain by default (zstd at ~300 MB/s
  on f32 pixels cost a third of the CPU for a 3.2x smaller column; `--image-compression zstd`
  restores it); glibc keeps freed slice buffers between batches (`src/malloc_tuning.rs`); PNGs
  decoded into reused buffers; intensities from lookup tables; the walk types entries from
  `readdir`.
- From 4x to 5x (session 3, each measured as paired A/B runs of CPU time):
  lungseg and prepare's hot dependencies are built without debug assertions in the dev profile
  (core's inlined precondition checks halved the speed of every per-pixel loop; -6 to -16% of
  the decode CPU); plain gray PNGs are inflated and unfiltered in one shot (`src/pixels/gray_png.rs`,
  the png crate for everything else); glibc grows the decoding threads' heaps in 32 MiB steps
  (it grew them with ~1,600 `mprotect` calls per run, each interrupting the other core to flush
  its TLB: -6 to -8%); decode batches of 64 slices instead of 256 (less fresh memory in flight:
  -5%); the pixel columns reach Parquet as `BinaryView` arrays over the records' own buffers (one
  copy of every pixel less: -3%); one `read` per file instead of two.
- Session 4 (-8% CPU, output byte-identical): consecutive Average/Paeth rows are unfiltered in
  pairs, whose dependency chains the CPU overlaps (images decode ~10% faster); a mask file
  byte-identical to the last blank mask decoded on that worker is known blank without inflating
  it (a sixth of the mask files); files are opened relative to a held handle on their nodule
  folder (`openat`: two path components per file instead of seven); one decoding scratch per
  worker thread for the whole run.
- `make bench` runs `sync` before every timed prepare and notebook-loop run, so that no run
  shares the two cores with the kernel writing back the previous run's shards, and each prepare
  round writes a fresh data directory (the disk is mounted with `discard`, and deleting the last
  round's shards just before a run had the file system discarding their blocks during it).
- **Train step and eval forward (issue #13).** lungseg's CPU kernels (`src/model/cpu/`:
  direct convolutions, BatchNorm+ReLU, max-pool, bilinear upsample+concat, losses, Adam; AVX-512
  on Rust >= 1.89, AVX2, scalar, chosen at run time) run behind candle ops (`src/model/ops/`):
  the whole training pass is one autograd node (`ops/network.rs`), the eval forward one node
  without backward (`ops/inference.rs`), each loss one op, Adam one in-place sweep per
  parameter. `ConvImpl::CandleReference` (or `LUNGSEG_KERNELS=reference`) selects candle's
  compositions; `ConvImpl::FusedLayers` one node per layer op.
- **Each change, predicted and measured** (2 threads unless noted; measured on this VM while
  other jobs ran, load average 6-10, so CPU seconds per step are the steadier figure; A/B runs
  interleaved; details in the commit messages of branch h13-cpu-speed):

  | change | predicted | measured |
  |---|---|---|
  | direct convolution: a register tile of 8 output channels x 32 columns over a zero-padded slab of input rows, no im2col; weight gradient as vectors over output channels of the transposed output gradient | ~100 GFLOP per core-second (stand-alone prototype; the `gemm` crate on im2col matrices of the same layers: 31) | 105-110 GFLOP per CPU-second forward and input gradient, 86-97 weight gradient, width 64 (`lungseg-bench layers`); one 64->64 3x3 layer forward+backward through autograd 3427 -> 425 CPU-ms (forward alone 522 -> 93) |
  | AVX-512 instead of AVX2 (Zen 4: same FMA throughput, 32 registers) | ~1.1x | 1.47x on the convolutions (this AVX2 path uses 8x8-lane tiles: 72-79 forward, 54-58 weight gradient; not tuned further, as this CPU has AVX-512) |
  | fused BatchNorm+ReLU, max-pool, upsample+concat, in-place Adam (one autograd node each) | many-fold per op (candle: ~20 ops forward, ~71 backward per BatchNorm+ReLU) | through autograd incl. an identical harness (multiply, sum, backward) on both sides, 8x64x128x128: BatchNorm+ReLU 932 -> 223 CPU-ms, max-pool 331 -> 85, upsample+concat 1631 -> 503; Adam over all width-64 parameters 4.7 CPU-ms |
  | all of the above (first commit) | ~2 s per width-64 step on an idle machine | width 8: 2.7-3.3 -> 0.38-0.41 s per step (load avg ~7); width 64: 7.29 s against PyTorch's 10.17 s in the same conditions |
  | the whole training pass as one autograd node, activations and gradients from a buffer pool kept across steps, vs one node per layer op (`--kernels fused-layers`) | ~40% less CPU at width 8 (perf: ~40% of samples in candle's own spinning thread pool and GradStore's zero-fill + add per edge) | CPU per step width 8 0.219-0.246 -> 0.109-0.132 s, width 64 4.68 -> 3.81 s; peak RSS 902 -> 1026 MB (the pool keeps a step's gradients) |
  | a `[patch.crates-io]` candle that stores a node's first gradient instead of adding it to zeros | - | not built: with the whole pass one node, the only autograd edges left are the logits, the loss and the 42 parameters |
  | weight gradient vectorised along image rows for narrow layers (< 32 output channels, and the 1-channel first layer) | 2-3x for 8 and 16 channels (no wasted lanes, no transpose) | first version 28-32 GFLOP/CPU-s (27 accumulators spilled to the stack), after moving the tile loop into its own function 54-81; width-8 weight gradients 58 -> 28 CPU-ms per step; first layer at width 64 15 -> 10 CPU-ms |
  | output gradient transposed in 16-column blocks for the wide weight gradient | 5-10% of the weight gradient | 6% slower (1.34-1.37 vs 1.26-1.27 CPU-s per step); dropped |
  | eval forward as one op with BatchNorms folded into the convolutions and pooled activations | the ~25% of a width-8 eval forward that perf put in page faults, clears and memsets | CPU per forward width 8 0.041-0.042 -> 0.024-0.027 s, width 64 1.33-1.35 -> 1.13-1.18 s |
  | each loss one fused op (sums in f64, one gradient sweep) | up to 12% at width 8 (candle element-wise ops on the logits) | CPU per step median 0.116 -> 0.109 s (7 rounds) |
  | a path of its own for the 1x1 head | - | not done: the head's three passes cost 12 CPU-ms of a 3.8 CPU-s width-64 step |

- **Numerics.** Every fused op is tested against its candle composition, forward and every
  gradient, on odd shapes (odd H and W, batch 1, channel counts not multiples of 8), with the
  kernels' outputs filled with NaN first: convolution kernels against f64 direct sums on every
  instruction set the CPU has (1e-5), the ops against candle (1e-4; pooling 1e-6, upsampling
  1e-5), the whole U-Net's 42 gradients against the reference ops (1e-4 of the largest), the
  eval forward (1e-4), the running statistics (1e-5), fused Adam against the composed update
  (1e-6 after 3 steps with weight decay), fused losses (value 1e-5, gradient 1e-4). On an input
  with flat regions (as CT background) the fused gradients stay within 3.4e-6 of candle's ops
  in f64, candle's own f32 ops within 3.1e-3 (rounding decides which values tie in a pooling
  window).
- **Max-pool gradient.** candle 0.11's `max_pool2d` backward scales each window's gradient by
  the share of maxima in it (a unique maximum gets a quarter of its gradient), and `max`
  reductions give every tied maximum the whole gradient (four times over in a flat window).
  The fused kernel and the reference composition both route it to the window's first maximum
  in row-major order, as PyTorch does; before this change lungseg trained with candle's.
- **3-epoch runs, fused vs reference** (width 8, 64x64 patches, 10 steps per epoch, test
  `fused_kernels_and_reference_ops_give_the_same_epoch_table`): at the default learning rate
  1e-4 every column of the epoch table agrees within 1.6e-5 (seeds 1, 2). At the demo's 3e-3
  the early epochs are chaotic: training losses agree within 1.9e-4 but validation columns
  differ by up to 6.3e-3, and two candle-only variants (the reference, and the reference with
  its convolution backward computed differently) differed as much (6.8e-3); freezing the conv
  biases in front of the BatchNorms (true gradient zero) did not shrink the gap.
- **Deleted after losing a measurement** (the code is gone, the figures stay): before the fused
  kernels, lungseg's CPU conv backward (`src/model/fast_conv.rs`: im2col input gradient,
  shift-gemm weight gradient, 1.6x faster than candle's backward) trained with candle's forward;
  the direct kernels above replaced it whole. Of its three weight-gradient algorithms, measured
  on a `B=8, 96->32, 128x128, k=3` layer at 2 threads, candle's formula
  (`conv2d(x^T, grad_y^T)^T`) took 1.1 s, an explicit im2col matrix times `grad_y` 4.0 s
  (building the matrix from padded, shifted views dominated) and shift-gemm 0.54 s; the two
  losers were deleted first, then fast_conv itself with the fused kernels.
- Timings on this shared 2-core VM vary by +-15% from run to run; hence the interleaved rounds and
  medians for prepare. Streaming and prepare figures depend on the page cache; the script warms it.
""")
print("## Reproduce\n\n```sh\nmake bench                       # full run, rewrites this file\nBENCH_SMALL=1 make bench         # smoke run\nBENCH_SKIP_TORCH=1 make bench    # without the PyTorch baseline\n```")

# Sections measured by their own scripts (not by bench.sh), kept in docs/bench/ and carried over
# verbatim, each naming its command: memory on hostile inputs (scripts/bench_memory.sh), the
# steadiness of training against PyTorch (scripts/steadiness.py).
for extra in sorted(os.listdir("docs/bench")) if os.path.isdir("docs/bench") else []:
    if extra.endswith(".md"):
        with open(os.path.join("docs/bench", extra)) as f:
            print("\n" + f.read().rstrip())

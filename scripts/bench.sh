#!/usr/bin/env bash
# `make bench`: measures lungseg against the notebook's own code on this machine, in one run,
# and rewrites BENCHMARKS.md. Not a test: it takes 10-20 minutes on 2 cores.
#
#   prepare throughput  lungseg prepare vs scripts/seed_loader.py (the notebook's cv2+numpy
#                       loader loop) on the same >= 2,000-slice synthetic tree
#   prepare memory      peak RSS of prepare at ~2k and ~20k slices
#   train step          lungseg-bench train-step vs scripts/torch_baseline.py (the notebook's
#                       model and loss in PyTorch), batch 8, 128x128, widths 8 and 64, 1 thread
#                       and all threads, training step and eval-mode forward: interleaved rounds
#                       (each lungseg run right before its PyTorch twin), plus candle's reference
#                       ops once per width and every fused kernel alone (lungseg-bench layers)
#   stream              shards -> device-ready patch batches, no model
#   train memory        peak RSS of `lungseg train` at 1x and 10x the data
#   tcia                prepare --source tcia vs pylidc (scripts/bench_tcia.sh -> docs/bench/tcia.md)
#
# Knobs: BENCH_DIR (scratch, default /tmp/lungseg-bench), BENCH_THREADS (default: all cores),
# BENCH_SKIP_TORCH=1 (no PyTorch baseline), BENCH_SMALL=1 (quick smoke run, small trees),
# BENCH_TRAIN_ROUNDS (interleaved train-step rounds, default 3), BENCH_TRAIN_ONLY=1 (re-measure
# only the train-step section; the other rows of the last run's $BENCH_DIR/results.jsonl stay).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lungseg-target}
cargo build --bins --quiet
BIN=$CARGO_TARGET_DIR/debug/lungseg
BENCH=$CARGO_TARGET_DIR/debug/lungseg-bench
WORK=${BENCH_DIR:-/tmp/lungseg-bench}
THREADS=${BENCH_THREADS:-$(nproc)}
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS
WITH_CV2=1 bash scripts/ensure-python-deps.sh
if [ "${BENCH_SKIP_TORCH:-0}" != 1 ]; then bash scripts/ensure-torch.sh >/dev/null; fi
# 160 patients of the synthetic default hold about 2,100 slices; 1,600 about 21,000.
if [ "${BENCH_SMALL:-0}" = 1 ]; then P1=12; P10=40; STEPS=1; REPS=2; REPS10=1; ROUNDS=1
else P1=160; P10=1600; STEPS=3; REPS=11; REPS10=5; ROUNDS=3; fi
ROUNDS=${BENCH_TRAIN_ROUNDS:-$ROUNDS}
mkdir -p "$WORK"
LOG=$WORK/results.jsonl
TRAIN_ONLY=${BENCH_TRAIN_ONLY:-0}
if [ "$TRAIN_ONLY" = 1 ]; then
  [ -s "$LOG" ] || { echo "bench: BENCH_TRAIN_ONLY=1 needs an earlier run's $LOG" >&2; exit 1; }
  grep -v -E '"name": "((candle|torch)_(step|fwd)_|candle_ref_step_|layers_)' "$LOG" > "$LOG.keep" || true
  mv "$LOG.keep" "$LOG"
else
  : > "$LOG"
fi

# time_json NAME CMD...: runs CMD under /usr/bin/time, appends {name, wall_s, max_rss_mb, user_s,
# sys_s}.
time_json() {
  local name=$1; shift
  /usr/bin/time -f '%e %M %U %S' -o "$WORK/time.txt" "$@" > "$WORK/$name.out" 2> "$WORK/$name.err"
  read -r wall rss user sys < "$WORK/time.txt"
  python3 - "$name" "$wall" "$rss" "$user" "$sys" "$WORK/$name.out" >> "$LOG" <<'PY'
import json, sys
name, wall, rss, user, sys_s, out = sys.argv[1:]
rec = {"name": name, "wall_s": float(wall), "max_rss_mb": int(rss) / 1024,
       "user_s": float(user), "sys_s": float(sys_s)}
try:
    rec["stdout"] = json.loads(open(out).read().strip().splitlines()[-1])
except Exception:
    rec["stdout"] = open(out).read().strip().splitlines()[-1:]
print(json.dumps(rec))
PY
}

# stage_json NAME PREPARE_JSON: appends prepare's own counts (stage seconds, bytes) as NAME_stage.
stage_json() {
  python3 - "$1" "$2" >> "$LOG" <<'PY'
import json, sys
name, path = sys.argv[1:]
c = json.load(open(path))["counts"]
print(json.dumps({"name": name + "_stage", "stdout": c}))
PY
}

if [ "$TRAIN_ONLY" != 1 ]; then
echo "bench: synthetic trees ($P1 and $P10 patients)" >&2
for n in $P1 $P10; do
  [ -d "$WORK/tree-$n" ] || "$BIN" -q synth --out "$WORK/tree-$n" --patients "$n" --seed 17
done
rm -rf "$WORK/data-$P1" "$WORK/data-$P10"

# compare_prepare TREE TAG ROUNDS CODECS...: interleaved rounds of the notebook loop and of
# `lungseg prepare` with each image codec on the same tree; data dirs end up in data-TAG-CODEC.
# prepare's own stage time (prepare.json counts.seconds: walk, decode, write shards and tables)
# is compared with the notebook loop's own timer (the loop alone, without interpreter start-up
# or imports); the report takes medians. Every timed run starts after `sync`, so that no run
# shares the CPUs with the kernel writing back the previous run's ~60-600 MB of shards, and each
# round writes a fresh directory: deleting the last round's shards right before a run would make
# the file system discard their blocks (this disk is mounted with `discard`) during the run.
compare_prepare() {
  local tree=$1 tag=$2 rounds=$3; shift 3
  find "$tree" -name '*.png' -exec cat {} + > /dev/null  # same warm page cache for both
  for r in $(seq 1 "$rounds"); do
    sync
    time_json "seed_loader_${tag}_r$r" python3 scripts/seed_loader.py "$tree"
    for codec in "$@"; do
      rm -rf "$WORK/data-$tag-$codec-r$r"
      sync
      time_json "prepare_${codec}_${tag}_r$r" "$BIN" -q prepare --input "$tree" \
        --out "$WORK/data-$tag-$codec-r$r" --threads "$THREADS" --image-compression "$codec"
      stage_json "prepare_${codec}_${tag}_r$r" "$WORK/data-$tag-$codec-r$r/prepare.json"
    done
  done
  for codec in "$@"; do
    rm -rf "$WORK/data-$tag-$codec"
    mv "$WORK/data-$tag-$codec-r$rounds" "$WORK/data-$tag-$codec"
    for r in $(seq 1 $((rounds - 1))); do rm -rf "$WORK/data-$tag-$codec-r$r"; done
  done
  sync
}
echo "bench: prepare vs the notebook loader: $P1 patients, $REPS rounds" >&2
compare_prepare "$WORK/tree-$P1" 1x "$REPS" none zstd
echo "bench: prepare vs the notebook loader: $P10 patients, $REPS10 rounds" >&2
compare_prepare "$WORK/tree-$P10" 10x "$REPS10" none
rm -rf "$WORK/data-$P1" "$WORK/data-$P1-zstd" "$WORK/data-$P10"
mv "$WORK/data-1x-none" "$WORK/data-$P1"
mv "$WORK/data-1x-zstd" "$WORK/data-$P1-zstd"
mv "$WORK/data-10x-none" "$WORK/data-$P10"
"$BIN" -q split --data "$WORK/data-$P1"
"$BIN" -q split --data "$WORK/data-$P1-zstd"
"$BIN" -q split --data "$WORK/data-$P10"

echo "bench: stream" >&2
"$BENCH" stream --data "$WORK/data-$P1" --epochs 1 > /dev/null  # warm the page cache
time_json stream "$BENCH" stream --data "$WORK/data-$P1" --epochs 3
"$BENCH" stream --data "$WORK/data-$P1-zstd" --epochs 1 > /dev/null
time_json stream_zstd "$BENCH" stream --data "$WORK/data-$P1-zstd" --epochs 3

fi

# Train step and eval forward: ROUNDS interleaved rounds; in each, every (threads, width, mode)
# runs lungseg and then PyTorch on the same number of threads, so a busy spell on this shared
# machine hits both; the report takes medians and per-round ratios.
THREAD_SET=$(printf '%s\n' 1 "$THREADS" | sort -un | tr '\n' ' ')
echo "bench: train step and eval forward (batch 8, 128x128; threads $THREAD_SET; $ROUNDS rounds)" >&2
for r in $(seq 1 "$ROUNDS"); do
  for t in $THREAD_SET; do
    for base in 8 64; do
      # A width-8 step takes ~0.1 s: time more of them.
      steps=$STEPS; [ $base = 8 ] && steps=$((4 * STEPS))
      for mode in step fwd; do
        flag=(); [ $mode = fwd ] && flag=(--forward-only)
        time_json "candle_${mode}_b${base}_t${t}_r$r" env RAYON_NUM_THREADS="$t" \
          "$BENCH" train-step --base $base --steps $steps "${flag[@]}"
        if [ "${BENCH_SKIP_TORCH:-0}" != 1 ]; then
          time_json "torch_${mode}_b${base}_t${t}_r$r" env OMP_NUM_THREADS="$t" \
            python3 scripts/torch_baseline.py --threads "$t" --base $base --steps $steps "${flag[@]}"
        fi
      done
    done
  done
done
for base in 8 64; do
  time_json "candle_ref_step_b$base" "$BENCH" train-step --base $base --steps $STEPS --kernels candle-reference
  time_json "layers_b$base" "$BENCH" layers --base $base
done

if [ "$TRAIN_ONLY" != 1 ]; then
echo "bench: train memory at 1x and 10x" >&2
for n in $P1 $P10; do
  rm -rf "$WORK/run-$n"
  time_json "train_rss_$n" "$BIN" -q train --data "$WORK/data-$n" --run "$WORK/run-$n" --device cpu \
    --base-channels 8 --max-epochs 1 --max-steps-per-epoch 20 --val-batch-size 8
done

fi

bash scripts/bench_tcia.sh
python3 scripts/bench_report.py "$LOG" "$THREADS" > BENCHMARKS.md
echo "bench: wrote BENCHMARKS.md" >&2

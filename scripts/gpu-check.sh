#!/usr/bin/env bash
# The one-command check for a GPU node (CUDA, cuDNN from PyTorch's wheels, no Rust, no network).
# Needs .gpu/ from scripts/gpu-bundle.sh (pass `.gpu` as the device tool's `carry`). Writes
# every result under $OUT (copy them into docs/gpu/ for `make bench` to report):
#   measured.txt      node, driver, bundle revision
#   gpu-tests.txt     CUDA vs CPU: the whole-network op (f32 and TF32), fused Adam, resume
#   candle-cuda.json  train-step / forward-only rows: fused (cuDNN + lungseg kernels) in TF32 and
#                     strict f32, and candle's reference ops (the old path), widths 8 and 64
#   torch-cuda.json   PyTorch eager defaults, and the fastest practical PyTorch (--fast)
#   same-seed.json    the same short training run on CPU and CUDA: validation Dice of each
#   full-size.json    875 synthetic patients, 3 epochs at the defaults: seconds, projection to 20
#                     epochs, GPU utilisation; full-size-epochs.parquet, full-size-train.log
#   nsys.txt          kernel time summary of a width-64 step (if nsys is installed)
# Steps run in order of value and each has a time limit; one that would overrun the call's
# budget (GPU_CHECK_BUDGET seconds, default 540) is skipped and says so.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
BUDGET=${GPU_CHECK_BUDGET:-540}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu-check.log") 2>&1
status=0
step() { echo; echo "== [$SECONDS s] $*"; }
# `within N`: true if N more seconds fit in the budget, else says the step is skipped.
within() {
  if [ $((SECONDS + $1)) -gt "$BUDGET" ]; then
    echo "skipped: needs ~$1 s, $((BUDGET - SECONDS)) s left"
    return 1
  fi
}
G=/tmp/lungseg-gpu-bundle
rm -rf "$G" && mkdir -p "$G"
python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
  .gpu/bundle.tar.xz "$G" || { echo "gpu-check: no .gpu/bundle.tar.xz; run scripts/gpu-bundle.sh"; exit 1; }
G=$G/gpu

step "node"
{
  echo "date: $(date -u +%F)"
  echo "device: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
  echo "revision: $(cat "$G/REVISION" 2>/dev/null || echo unknown) (the CUDA build in .gpu/bundle.tar.xz)"
  echo "command: scripts/gpu-check.sh"
} | tee "$OUT/measured.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
# cudarc dlopens cuBLAS/cuRAND by trying unversioned then versioned names; give it unversioned
# links to whatever the node has (ldconfig, the toolkit folders, PyTorch's nvidia-* wheels).
site=$(python3 -c 'import site; print(site.getsitepackages()[0])' 2>/dev/null)
mkdir -p /tmp/lungseg-libs
for lib in cublas cublasLt curand nvrtc; do
  found=$(ldconfig -p | awk -v l="lib$lib.so" '$1 ~ "^"l {print $NF; exit}')
  [ -n "$found" ] || found=$(find /usr/local/cuda*/lib64 /usr/local/cuda*/targets/*/lib \
    "$site/nvidia" -name "lib$lib.so*" 2>/dev/null | sort | head -1)
  [ -n "$found" ] && ln -sf "$found" "/tmp/lungseg-libs/lib$lib.so" && echo "lib$lib.so -> $found"
done
# cuDNN 9: the loader (libcudnn.so.9, linked by the bundle) and its engine libraries beside it.
cudnn=$(ldconfig -p | awk '/libcudnn\.so\.9/ {print $NF; exit}')
[ -n "$cudnn" ] || cudnn=$(find "$site/nvidia" /usr/local/cuda*/lib64 -name 'libcudnn.so.9' 2>/dev/null | head -1)
[ -n "$cudnn" ] || { echo "gpu-check: no libcudnn.so.9 on this node (pip install nvidia-cudnn-cu13)"; exit 1; }
echo "libcudnn.so.9 -> $cudnn"
export LD_LIBRARY_PATH=/tmp/lungseg-libs:$(dirname "$cudnn"):$G/lib:${LD_LIBRARY_PATH:-}
"$G/lungseg" --version
export LUNGSEG_REQUIRE_CUDA=1

step "CUDA vs CPU: the whole-network op (strict f32, TF32), fused Adam and its resume"
timeout 120 "$G/lib-tests" --exact device::tests::cuda_matches_cpu_forward_and_step --nocapture || status=1
timeout 180 "$G/lib-tests" model::gpu::tests --nocapture --test-threads 1 2>&1 | tee "$OUT/gpu-tests.txt"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
# A bundle built without the cudnn feature has none of these tests: that is a failure too.
grep -q "test result: ok. [1-9][0-9]* passed" "$OUT/gpu-tests.txt" || { echo "no CUDA op tests ran"; status=1; }

bench() { # bench NAME ARGS...: one candle train-step row
  timeout 120 "$G/lungseg-bench" train-step --device cuda --steps 20 --warmup 3 "$@" \
    | tee -a "$OUT/candle-cuda.json" || status=1
}
torch() { # torch ARGS...: one PyTorch row
  timeout "${TORCH_TIMEOUT:-120}" python3 scripts/torch_baseline.py --device cuda --steps 20 --warmup 3 "$@" \
    | tee -a "$OUT/torch-cuda.json" || status=1
}
rm -f "$OUT/candle-cuda.json" "$OUT/torch-cuda.json"
step "train step, batch 8, 128x128: candle (fused TF32 / f32, reference) and PyTorch eager"
if within 150; then
  for base in 64 8; do
    bench --base $base
    bench --base $base --forward-only
    bench --base $base --precision f32
    torch --base $base
    torch --base $base --forward-only
  done
  bench --base 64 --kernels candle-reference
  # Where a width-64 step goes: forward + loss, backward, Adam (synchronised between them).
  bench --base 64 --phases
fi

step "full-size run: 875 synthetic patients, 3 epochs at the defaults (width 64, batch 8)"
if within 200; then
  W=/tmp/lungseg-full; rm -rf $W
  t0=$SECONDS
  "$G/lungseg" -q synth --out $W/tree --patients 875 --seed 7 &&
  "$G/lungseg" -q prepare --input $W/tree --out $W/data &&
  "$G/lungseg" -q split --data $W/data || status=1
  prep=$((SECONDS - t0))
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 \
    > "$OUT/full-size-util.csv" 2>/dev/null &
  smi=$!
  t1=$(date +%s.%N)
  timeout 170 "$G/lungseg" train --data $W/data --run $W/run --device cuda --max-epochs 3 \
    --patience 3 2>&1 | tee "$OUT/full-size-train.log"
  trained=${PIPESTATUS[0]}
  t2=$(date +%s.%N)
  kill $smi 2>/dev/null
  cp $W/run/epochs.parquet "$OUT/full-size-epochs.parquet" 2>/dev/null
  [ "$trained" = 0 ] || { status=1; echo "full-size training failed (exit $trained)"; }
  [ "$trained" = 0 ] && python3 - "$t1" "$t2" "$prep" "$OUT" <<'PY' || status=1
import json, sys
t1, t2, prep, out = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
util = [float(l.split(",")[0]) for l in open(f"{out}/full-size-util.csv") if l.strip()]
mem = [float(l.split(",")[1]) for l in open(f"{out}/full-size-util.csv") if l.strip()]
busy = [u for u in util if u > 0] or [0.0]
r = {"what": "full-size", "patients": 875, "epochs": 3, "train_seconds": t2 - t1,
     "projected_20_epochs_seconds": (t2 - t1) / 3 * 20, "synth_prepare_split_seconds": prep,
     "gpu_util_mean": sum(util) / max(len(util), 1), "gpu_util_mean_while_busy": sum(busy) / len(busy),
     "gpu_memory_used_max_mib": max(mem or [0]), "samples": len(util)}
print(json.dumps(r))
json.dump(r, open(f"{out}/full-size.json", "w"))
PY
fi

step "same seed on CPU and CUDA: a short training run, validation Dice of each"
if within 120; then
  S=/tmp/lungseg-seed; rm -rf $S
  "$G/lungseg" -q synth --out $S/tree --patients 40 --seed 7 &&
  "$G/lungseg" -q prepare --input $S/tree --out $S/data &&
  "$G/lungseg" -q split --data $S/data || status=1
  for dev in cpu cuda; do
    timeout 100 "$G/lungseg" train --data $S/data --run $S/$dev --device $dev --precision f32 \
      --base-channels 8 --patch 64 --fg-crop 0.8 --lr 3e-3 --max-epochs 12 --patience 12 \
      --max-steps-per-epoch 30 || status=1
    "$G/lungseg" -q eval --data $S/data --run $S/$dev --device cpu || status=1
  done
  python3 - "$S" "$OUT" <<'PY' || status=1
import json, sys
s, out = sys.argv[1], sys.argv[2]
d = {dev: json.load(open(f"{s}/{dev}/eval/summary.json"))["dice"] for dev in ("cpu", "cuda")}
r = {"what": "same-seed", "dice_cpu": d["cpu"], "dice_cuda": d["cuda"],
     "difference": abs(d["cpu"] - d["cuda"]), "tolerance": 0.05}
print(json.dumps(r))
json.dump(r, open(f"{out}/same-seed.json", "w"))
sys.exit(0 if r["difference"] <= r["tolerance"] else 1)
PY
fi

step "the fastest practical PyTorch (cudnn.benchmark, channels_last, bf16 autocast, fused Adam, torch.compile)"
if within 100; then
  TORCH_TIMEOUT=60 torch --base 64 --fast --no-compile
  TORCH_TIMEOUT=60 torch --base 64 --fast --no-compile --forward-only
fi
if within 160; then
  TORCH_TIMEOUT=150 torch --base 64 --fast
fi

step "profile: kernel time of a width-64 training step (nsys)"
if command -v nsys >/dev/null && within 90; then
  timeout 80 nsys profile -o /tmp/lungseg-step -f true --stats=false \
    "$G/lungseg-bench" train-step --device cuda --base 64 --steps 5 --warmup 2 >/dev/null &&
  timeout 60 nsys stats -r cuda_gpu_kern_sum,cuda_api_sum -f csv /tmp/lungseg-step.nsys-rep \
    > "$OUT/nsys.txt" 2>&1 || echo "nsys failed"
  head -40 "$OUT/nsys.txt"
fi
echo "gpu-check: exit $status after $SECONDS s"
exit $status

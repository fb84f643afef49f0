#!/usr/bin/env bash
# The one-command check for a GPU node (CUDA, no Rust, no network). Needs .gpu/ from
# scripts/gpu-bundle.sh. Runs: the CUDA unit tests, a 2-epoch training run on synthetic data, and
# the train-step benchmark against PyTorch on the same GPU. Writes results under $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu-check.log") 2>&1
G=.gpu
status=0
step() { echo; echo "== $*"; }

step "node"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
ldconfig -p | grep -E "libcuda\.so|libcublas|libcurand|libcudart" | head -20 || true
# cudarc dlopens cuBLAS/cuRAND by trying unversioned then versioned names; give it unversioned
# links to whatever version the node has.
mkdir -p /tmp/lungseg-libs
for lib in cublas cublasLt curand nvrtc; do
  found=$(ldconfig -p | awk -v l="lib$lib.so" '$1 ~ "^"l {print $NF; exit}')
  [ -n "$found" ] && ln -sf "$found" "/tmp/lungseg-libs/lib$lib.so"
done
export LD_LIBRARY_PATH=/tmp/lungseg-libs:$PWD/$G/lib:${LD_LIBRARY_PATH:-}

step "CUDA unit tests"
"$G/lib-tests" --test-threads 1 2>&1 | tail -30 | tee "$OUT/unit-tests.txt"
[ "${PIPESTATUS[0]}" = 0 ] || status=1

step "2-epoch training on synthetic data (cuda)"
W=/tmp/lungseg-gpu; rm -rf $W
"$G/lungseg" -q synth --out $W/tree --patients 40 --seed 7 &&
"$G/lungseg" -q prepare --input $W/tree --out $W/data &&
"$G/lungseg" -q split --data $W/data &&
"$G/lungseg" train --data $W/data --run $W/run --device cuda --max-epochs 2 --lr 1e-3 || status=1
cp $W/run/epochs.parquet $W/run/config.json "$OUT/" 2>/dev/null

step "train-step benchmark: candle vs PyTorch, batch 8, 128x128, base 64"
"$G/lungseg-bench" train-step --device cuda --base 64 --steps 20 --warmup 3 | tee "$OUT/candle-cuda.json" || status=1
"$G/lungseg-bench" train-step --device cuda --base 64 --steps 20 --warmup 3 --forward-only | tee -a "$OUT/candle-cuda.json"
python3 scripts/torch_baseline.py --device cuda --base 64 --steps 20 --warmup 3 | tee "$OUT/torch-cuda.json" || status=1
python3 scripts/torch_baseline.py --device cuda --base 64 --steps 20 --warmup 3 --forward-only | tee -a "$OUT/torch-cuda.json"
echo "gpu-check: exit $status"
exit $status

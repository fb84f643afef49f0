#!/usr/bin/env bash
# The one-command check for a GPU node (CUDA, no Rust, no network). Needs .gpu/ from
# scripts/gpu-bundle.sh. Runs: the CUDA unit tests, a 2-epoch training run on synthetic data, and
# the train-step benchmark against PyTorch on the same GPU. Writes results under $OUT; copy
# measured.txt and the *.json files into docs/gpu/ for `make bench` to report them.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu-check.log") 2>&1
status=0
step() { echo; echo "== $*"; }
# Unpack the bundle from scripts/gpu-bundle.sh into G (binaries + libcudart).
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
ldconfig -p | grep -E "libcuda\.so|libcublas|libcurand|libcudart" | head -20 || true
# cudarc dlopens cuBLAS/cuRAND by trying unversioned then versioned names; give it unversioned
# links to whatever version the node has.
mkdir -p /tmp/lungseg-libs
# Where ldconfig knows none, fall back to the toolkit folders and PyTorch's pip-installed
# nvidia-* wheels.
for lib in cublas cublasLt curand nvrtc; do
  found=$(ldconfig -p | awk -v l="lib$lib.so" '$1 ~ "^"l {print $NF; exit}')
  [ -n "$found" ] || found=$(find /usr/local/cuda*/lib64 /usr/local/cuda*/targets/*/lib \
    "$(python3 -c 'import site; print(site.getsitepackages()[0])' 2>/dev/null)/nvidia" \
    -name "lib$lib.so*" 2>/dev/null | sort | head -1)
  [ -n "$found" ] && ln -sf "$found" "/tmp/lungseg-libs/lib$lib.so" && echo "lib$lib.so -> $found"
done
export LD_LIBRARY_PATH=/tmp/lungseg-libs:$G/lib:${LD_LIBRARY_PATH:-}

step "CUDA unit tests (the CPU==CUDA check first, strict, then the whole lib suite)"
LUNGSEG_REQUIRE_CUDA=1 "$G/lib-tests" --exact device::tests::cuda_matches_cpu_forward_and_step --nocapture || status=1
LUNGSEG_REQUIRE_CUDA=1 timeout 240 "$G/lib-tests" 2>&1 | tail -30 | tee "$OUT/unit-tests.txt"
[ "${PIPESTATUS[0]}" = 0 ] || status=1

step "2-epoch training on synthetic data (cuda)"
W=/tmp/lungseg-gpu; rm -rf $W
"$G/lungseg" -q synth --out $W/tree --patients 40 --seed 7 &&
"$G/lungseg" -q prepare --input $W/tree --out $W/data &&
"$G/lungseg" -q split --data $W/data &&
"$G/lungseg" train --data $W/data --run $W/run --device cuda --max-epochs 2 --lr 1e-3 || status=1
cp $W/run/epochs.parquet $W/run/config.json "$OUT/" 2>/dev/null

step "stream benchmark (shards -> cuda patch batches)"
"$G/lungseg-bench" stream --data $W/data --epochs 3 --device cuda | tee "$OUT/stream-cuda.json" || status=1

step "train-step benchmark: candle vs PyTorch on the same GPU, batch 8, 128x128"
for base in 8 64; do
  "$G/lungseg-bench" train-step --device cuda --base $base --steps 20 --warmup 3 | tee -a "$OUT/candle-cuda.json" || status=1
  "$G/lungseg-bench" train-step --device cuda --base $base --steps 20 --warmup 3 --forward-only | tee -a "$OUT/candle-cuda.json"
  python3 scripts/torch_baseline.py --device cuda --base $base --steps 20 --warmup 3 | tee -a "$OUT/torch-cuda.json" || status=1
  python3 scripts/torch_baseline.py --device cuda --base $base --steps 20 --warmup 3 --forward-only | tee -a "$OUT/torch-cuda.json"
done
echo "gpu-check: exit $status"
exit $status

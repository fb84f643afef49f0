#!/usr/bin/env bash
# Proves that the `cuda` and `cudnn` features compile on a machine without a GPU: installs the
# toolkit if needed (and cuDNN's loader library to link against, scripts/ensure-cudnn.sh),
# builds with CUDA_COMPUTE_CAP=80 (PTX that newer drivers JIT for Hopper), then checks that the
# binary starts and reports a clean "no device" error instead of crashing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-cuda-toolkit.sh
export CARGO_TARGET_DIR=${CUDA_TARGET_DIR:-$HOME/.cache/lungseg-target-cuda}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-80}
cargo build --features cuda --bins
cudnn=$(bash scripts/ensure-cudnn.sh)
export LIBRARY_PATH=$cudnn${LIBRARY_PATH:+:$LIBRARY_PATH}
export LD_LIBRARY_PATH=$cudnn${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
cargo build --features cudnn --bins
bin=$CARGO_TARGET_DIR/debug/lungseg
"$bin" --version
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
  echo "a GPU is present: run scripts/gpu-check.sh instead"
else
  # Without a GPU, asking for CUDA must fail cleanly (a message, no crash), and CPU must work.
  set +e
  out=$("$CARGO_TARGET_DIR/debug/lungseg-bench" train-step --device cuda --base 4 --size 16 --steps 1 2>&1)
  code=$?
  set -e
  echo "$out"
  [ "$code" = 1 ] && grep -q "cuda" <<<"$out" || { echo "expected a clean CUDA error, got exit $code" >&2; exit 1; }
  "$CARGO_TARGET_DIR/debug/lungseg-bench" train-step --device cpu --base 4 --size 16 --steps 1
fi
echo "cuda build check: ok"

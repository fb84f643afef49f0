#!/usr/bin/env bash
# Builds everything scripts/gpu-check.sh needs on a GPU node that has no Rust toolchain, into
# .gpu/ (git-ignored; pass it as `carry` to the device tool): the CUDA build of lungseg and
# lungseg-bench, the CUDA unit-test binary, and libcudart.so.11.0 from the local toolkit.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-cuda-toolkit.sh >/dev/null
export CARGO_TARGET_DIR=${CUDA_TARGET_DIR:-$HOME/.cache/lungseg-target-cuda}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-80}
cargo build --features cuda --bins
tests=$(cargo test --features cuda --lib --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("profile",{}).get("test") and m.get("executable"):
        print(m["executable"])' | tail -1)
rm -rf .gpu && mkdir -p .gpu/lib
cp "$CARGO_TARGET_DIR/debug/lungseg" "$CARGO_TARGET_DIR/debug/lungseg-bench" .gpu/
cp "$tests" .gpu/lib-tests
cudart=$(ldconfig -p | awk '/libcudart.so.11.0/ {print $NF; exit}')
[ -n "$cudart" ] && cp -L "$cudart" .gpu/lib/
strip .gpu/lungseg .gpu/lungseg-bench .gpu/lib-tests 2>/dev/null || true
du -sh .gpu

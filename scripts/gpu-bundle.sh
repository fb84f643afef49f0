#!/usr/bin/env bash
# Builds everything scripts/gpu-check.sh needs on a GPU node that has no Rust toolchain: the CUDA
# build of lungseg and lungseg-bench, the CUDA unit-test binary, and libcudart.so.11.0 from the
# local toolkit. The stripped debug binaries weigh ~330 MB, over the device tool's 64 MiB carry
# limit, so they travel as .gpu/bundle.tar.xz (~40 MB; git-ignored; pass `.gpu` as `carry`).
# gpu-check.sh unpacks it with Python's tarfile, which every node has.
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
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/gpu/lib"
cp "$CARGO_TARGET_DIR/debug/lungseg" "$CARGO_TARGET_DIR/debug/lungseg-bench" "$stage/gpu/"
cp "$tests" "$stage/gpu/lib-tests"
cudart=$(ldconfig -p | awk '/libcudart.so.11.0/ {print $NF; exit}')
[ -n "$cudart" ] && cp -L "$cudart" "$stage/gpu/lib/"
strip "$stage/gpu/lungseg" "$stage/gpu/lungseg-bench" "$stage/gpu/lib-tests"
rm -rf .gpu && mkdir -p .gpu
tar -C "$stage" -cf - gpu | xz -T0 -9 -q > .gpu/bundle.tar.xz.tmp
mv .gpu/bundle.tar.xz.tmp .gpu/bundle.tar.xz
du -sh .gpu/bundle.tar.xz

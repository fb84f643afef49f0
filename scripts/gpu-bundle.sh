#!/usr/bin/env bash
# Builds everything scripts/gpu-check.sh needs on a GPU node that has no Rust toolchain: the CUDA
# build of lungseg and lungseg-bench with the `cudnn` feature (cuDNN convolutions and lungseg's
# CUDA kernels), the CUDA unit-test binary, and libcudart.so.11.0 from the local toolkit. cuDNN
# itself is not carried: the bundle links libcudnn.so.9, which the node's PyTorch wheels provide
# with the engine libraries it loads (gpu-check.sh puts their folder on LD_LIBRARY_PATH). The stripped debug binaries weigh ~330 MB, over the device tool's 64 MiB carry
# limit, so they travel as .gpu/bundle.tar.xz (~40 MB; git-ignored; pass `.gpu` as `carry`).
# gpu-check.sh unpacks it with Python's tarfile, which every node has.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-cuda-toolkit.sh >/dev/null
export CARGO_TARGET_DIR=${CUDA_TARGET_DIR:-$HOME/.cache/lungseg-target-cuda}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-80}
# candle links cuBLAS at build time (cudarc's dynamic-linking), and cuBLAS's symbols carry the
# soname as their version ("libcublas.so.11"), so a binary linked against the local 11.8 toolkit
# cannot start on a node that has only CUDA 13. Link instead against CUDA 13's libcublas.so.13
# (from NVIDIA's pip wheel, ~440 MB, fetched once and kept here, never carried), through a
# CUDA_ROOT that holds it beside the local driver, nvrtc, curand and cudart libraries.
CU13=${CUBLAS13_ROOT:-$HOME/.cache/lungseg-cublas13}
if [ ! -e "$CU13/lib64/libcublasLt.so.13" ]; then
  mkdir -p "$CU13/wheel" "$CU13/lib64"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$CU13/wheel" "nvidia-cublas>=13,<14"
  unzip -o -q -j "$CU13"/wheel/nvidia_cublas-*.whl 'nvidia/cu13/lib/libcublas.so.13' \
    'nvidia/cu13/lib/libcublasLt.so.13' -d "$CU13/lib64"
  rm -rf "$CU13/wheel"
fi
ln -sf libcublas.so.13 "$CU13/lib64/libcublas.so"
ln -sf libcublasLt.so.13 "$CU13/lib64/libcublasLt.so"
for l in libcuda.so libnvrtc.so libcurand.so libcudart.so; do
  ln -sf "/usr/lib/x86_64-linux-gnu/$l" "$CU13/lib64/$l"
done
# cuDNN's loader library, only to link against (scripts/ensure-cudnn.sh).
ln -sf "$(bash scripts/ensure-cudnn.sh)/libcudnn.so.9" "$CU13/lib64/libcudnn.so"
export CUDA_ROOT=$CU13
cargo build --features cudnn --bins
tests=$(cargo test --features cudnn --lib --no-run --message-format=json 2>/dev/null \
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
# The node's copy of the tree may carry a stale git state, so the bundle names its own source.
rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || rev="$rev+uncommitted changes"
echo "$rev" > "$stage/gpu/REVISION"
rm -rf .gpu && mkdir -p .gpu
tar -C "$stage" -cf - gpu | xz -T0 -9 -q > .gpu/bundle.tar.xz.tmp
mv .gpu/bundle.tar.xz.tmp .gpu/bundle.tar.xz
du -sh .gpu/bundle.tar.xz

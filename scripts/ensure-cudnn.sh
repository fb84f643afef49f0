#!/usr/bin/env bash
# Prints a folder holding cuDNN 9 for the `cudnn` feature: libcudnn.so (to link against) and
# libcudnn*.so.9 (to run). Put it on LIBRARY_PATH when building and on LD_LIBRARY_PATH when
# running (the Makefile's `train` does both).
#  - With cuDNN installed (ldconfig knows libcudnn.so.9, or Python has NVIDIA's nvidia-cudnn
#    wheel, as every CUDA PyTorch install does), the folder links to it.
#  - Otherwise (a build machine without a GPU) it holds only the loader library, libcudnn.so.9
#    (137 KB) from NVIDIA's pip wheel nvidia-cudnn-cu13 (~520 MB download, fetched once, then
#    deleted): enough to link, not to run convolutions.
set -euo pipefail
dir=${CUDNN_CACHE:-$HOME/.cache/lungseg-cudnn}
lib=$dir/lib
mkdir -p "$lib"
installed=$(ldconfig -p 2>/dev/null | awk '/libcudnn\.so\.9 / {print $NF; exit}')
if [ -z "$installed" ]; then
  installed=$(python3 - <<'PY' 2>/dev/null || true
import os, nvidia.cudnn
for root in nvidia.cudnn.__path__:
    p = os.path.join(root, "lib", "libcudnn.so.9")
    if os.path.exists(p):
        print(p)
        break
PY
)
fi
if [ -n "$installed" ]; then
  for f in "$(dirname "$installed")"/libcudnn*.so.9; do
    ln -sf "$f" "$lib/$(basename "$f")"
  done
elif [ ! -e "$lib/libcudnn.so.9" ]; then
  mkdir -p "$dir/wheel"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$dir/wheel" "nvidia-cudnn-cu13>=9,<10" >&2
  unzip -o -q -j "$dir"/wheel/nvidia_cudnn_cu13-*.whl 'nvidia/cudnn/lib/libcudnn.so.9' -d "$lib"
  rm -rf "$dir/wheel"
fi
ln -sf libcudnn.so.9 "$lib/libcudnn.so"
echo "$lib"

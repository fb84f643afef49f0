#!/usr/bin/env bash
# Puts cuDNN 9's loader library (libcudnn.so.9, 137 KB) under ~/.cache/lungseg-cudnn/lib for
# linking the `cudnn` feature on a machine without cuDNN: taken from NVIDIA's pip wheel
# (nvidia-cudnn-cu13, ~520 MB download, fetched once and deleted after extraction). The loader
# finds cuDNN's engine libraries at run time on the GPU node (PyTorch's wheel ships them;
# scripts/gpu-check.sh puts their folder on LD_LIBRARY_PATH). Prints the folder.
set -euo pipefail
dir=${CUDNN_CACHE:-$HOME/.cache/lungseg-cudnn}
lib=$dir/lib
if [ ! -e "$lib/libcudnn.so.9" ]; then
  mkdir -p "$dir/wheel" "$lib"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$dir/wheel" "nvidia-cudnn-cu13>=9,<10" >&2
  unzip -o -q -j "$dir"/wheel/nvidia_cudnn_cu13-*.whl 'nvidia/cudnn/lib/libcudnn.so.9' -d "$lib"
  rm -rf "$dir/wheel"
fi
ln -sf libcudnn.so.9 "$lib/libcudnn.so"
echo "$lib"

#!/usr/bin/env bash
# Installs Debian's CUDA toolkit (nvcc 11.8, from the contrib/non-free components) so that
# `cargo build --features cuda` compiles on a machine without a GPU. About 2.3 GB.
# Idempotent: does nothing when nvcc is already on the PATH.
set -euo pipefail
if command -v nvcc >/dev/null 2>&1; then
  echo "nvcc already installed: $(nvcc --version | tail -1)"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
src=/etc/apt/sources.list.d/lungseg-nonfree.sources
if ! grep -rqs "non-free" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  echo "adding contrib non-free components for $codename in $src"
  $SUDO tee "$src" >/dev/null <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: $codename $codename-updates
Components: contrib non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
  nvidia-cuda-toolkit nvidia-cuda-toolkit-gcc
nvcc --version | tail -1

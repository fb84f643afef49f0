#!/usr/bin/env bash
# Makes sure PyTorch, safetensors and numpy are importable, for the PyTorch baseline of
# `make bench` (scripts/torch_baseline.py) and the GPU check / checkpoint interop script
# (scripts/load_in_pytorch.py). Never used by `make test`.
#
# Usage: bash scripts/ensure-torch.sh        (PYTHON=python3 by default)
#
# Installs whatever is missing from PyPI with the ordinary pip client. Note: the PyPI `torch`
# wheel for Linux x86_64 pulls the CUDA runtime libraries (several GB); it still runs on CPU.
set -euo pipefail
PY=${PYTHON:-python3}
missing=()
for mod in torch safetensors numpy; do
  "$PY" -c "import $mod" 2>/dev/null || missing+=("$mod")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Python packages: ${missing[*]} (torch from PyPI is several GB)" >&2
  "$PY" -m pip install --quiet --disable-pip-version-check "${missing[@]}" 2>&1 | grep -v "Running pip as the 'root'" >&2 || true
  for mod in "${missing[@]}"; do
    "$PY" -c "import $mod" || { echo "could not install $mod" >&2; exit 1; }
  done
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" >&2

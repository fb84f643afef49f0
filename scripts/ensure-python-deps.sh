#!/usr/bin/env bash
# Makes sure the Python packages the interoperability tests use are importable:
# polars and pyarrow (read every table), numpy (reference computations), opencv (the
# notebook's loader, for benchmarks only). Installs what is missing from PyPI.
set -euo pipefail
PY=${PYTHON:-python3}
missing=()
for mod in polars pyarrow numpy; do
  "$PY" -c "import $mod" 2>/dev/null || missing+=("$mod")
done
if [ "${WITH_CV2:-0}" = 1 ]; then
  "$PY" -c "import cv2" 2>/dev/null || missing+=("opencv-python-headless")
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Python packages: ${missing[*]}" >&2
  "$PY" -m pip install --quiet --disable-pip-version-check "${missing[@]}" 2>&1 | grep -v "Running pip as the 'root'" >&2 || true
  for mod in "${missing[@]}"; do
    m=${mod/opencv-python-headless/cv2}
    "$PY" -c "import $m" || { echo "could not install $mod" >&2; exit 1; }
  done
fi

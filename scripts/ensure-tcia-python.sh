#!/usr/bin/env bash
# Makes the Python environment the TCIA/LIDC reference scripts need and prints the path
# of its python on stdout (everything else goes to stderr).
#
#   bash scripts/ensure-tcia-python.sh           # pydicom + matplotlib (scripts/tcia_fixtures.py)
#   bash scripts/ensure-tcia-python.sh --bench   # ... + pylidc 0.2.3 and its deps (scripts/bench_pylidc.py)
#
# The venv lives in ${LUNGSEG_TCIA_VENV:-$HOME/.cache/lungseg/py-tcia}, made with
# --system-site-packages so the globally installed numpy is reused. Packages come from
# PyPI through the ordinary pip client; nothing is installed when they already import.
set -euo pipefail
BASE_PY=${PYTHON:-python3}
VENV=${LUNGSEG_TCIA_VENV:-$HOME/.cache/lungseg/py-tcia}
BENCH=0
for a in "$@"; do
  case "$a" in
    --bench) BENCH=1 ;;
    *) echo "usage: $0 [--bench]" >&2; exit 2 ;;
  esac
done

if [ ! -x "$VENV/bin/python" ]; then
  echo "creating venv $VENV" >&2
  mkdir -p "$(dirname "$VENV")"
  "$BASE_PY" -m venv --system-site-packages "$VENV" >&2
fi
PY="$VENV/bin/python"

# module:requirement pairs. pylidc 0.2.3 needs pkg_resources (setuptools < 81) and
# configparser.SafeConfigParser (Python <= 3.11); numpy's removed aliases (np.int) are
# monkeypatched by bench_pylidc.py itself.
want=("numpy:numpy" "pydicom:pydicom==3.0.2" "matplotlib:matplotlib>=3.7,<4")
if [ "$BENCH" = 1 ]; then
  want+=("scipy:scipy" "sqlalchemy:sqlalchemy>=1.4,<3" "skimage:scikit-image"
         "pkg_resources:setuptools<81")
fi
missing=()
for w in "${want[@]}"; do
  mod=${w%%:*}; req=${w#*:}
  "$PY" -c "import $mod" 2>/dev/null || missing+=("$req")
done
if [ "$BENCH" = 1 ] && ! "$PY" -m pip show -q pylidc >/dev/null 2>&1; then
  missing+=("pylidc==0.2.3")
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing into $VENV: ${missing[*]}" >&2
  "$PY" -m pip install --quiet --disable-pip-version-check "${missing[@]}" 2>&1 \
    | grep -v "Running pip as the 'root'" >&2 || true
  for w in "${want[@]}"; do
    mod=${w%%:*}
    "$PY" -c "import $mod" 2>/dev/null || { echo "could not install ${w#*:}" >&2; exit 1; }
  done
  if [ "$BENCH" = 1 ]; then
    "$PY" -m pip show -q pylidc >/dev/null 2>&1 || { echo "could not install pylidc" >&2; exit 1; }
  fi
fi
echo "$PY"

#!/usr/bin/env bash
# Peak memory of lungseg on hostile and large inputs (issue #12): `prepare` on a synthetic tree
# with decompression bombs in it, and `predict` (a width-4 U-Net, as in the issue) on one
# 2048x2048 and one 8192x8192 slice and on a bomb. Prints a markdown table of peak RSS
# (`/usr/bin/time -v`), wall time and outcome per case.
#
#   scripts/bench_memory.sh                      # this checkout's dev build
#   BASELINE=/path/to/old/lungseg scripts/bench_memory.sh   # adds that binary's column
#
# Environment: LUNGSEG (binary to measure; default: `cargo build --bins`, dev profile),
# BASELINE (optional second binary; it runs only the cases a build without the caps survives
# on this machine: one 8-bit bomb, 3.6 GB, and the 2048x2048 slice, ~5 GB), SIZES (predict slice
# sides, default "2048 8192"), WORK (scratch folder, default a fresh temporary one, removed at
# the end unless given).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${CARGO_TARGET_DIR:=$HOME/.cache/lungseg-target}"
export CARGO_TARGET_DIR
if [[ -z "${LUNGSEG:-}" ]]; then
    cargo build --quiet --bins
    LUNGSEG="$CARGO_TARGET_DIR/debug/lungseg"
fi
BASELINE=${BASELINE:-}
SIZES=${SIZES:-"2048 8192"}
if [[ -z "${WORK:-}" ]]; then
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
fi
mkdir -p "$WORK"
if [[ ! -x /usr/bin/time ]]; then
    echo "installing GNU time (/usr/bin/time) with apt-get" >&2
    apt-get install -y -qq time >/dev/null
fi

# PNG writers with the standard library only: a bomb (a header declaring WxH, image data for
# one row) and a large 8-bit gray slice (a gradient with a bright disc), zlib by hand.
cat >"$WORK/png.py" <<'EOF'
import math, struct, sys, zlib

def chunk(kind, data):
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

def png(w, h, depth, colour, idat):
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))

def slice_rows(w, h):
    base = bytes(x * 255 // max(w - 1, 1) for x in range(w))
    cx, cy, r = w // 2, h // 2, min(w, h) // 8
    z = zlib.compressobj(6)
    out = []
    for y in range(h):
        row = bytearray(b"\0" + base)
        if abs(y - cy) <= r:
            half = math.isqrt(r * r - (y - cy) ** 2)
            row[1 + cx - half:1 + cx + half] = b"\xf0" * (2 * half)
        out.append(z.compress(bytes(row)))
    out.append(z.flush())
    return b"".join(out)

kind, path, w, h = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if kind == "slice":
    data = png(w, h, 8, 0, slice_rows(w, h))
else:  # bomb-<depth>-<colour>
    _, depth, colour = kind.split("-")
    data = png(w, h, int(depth), int(colour), zlib.compress(b"\0" * 256))
open(path, "wb").write(data)
EOF
mkpng() { python3 "$WORK/png.py" "$@"; }

# measure NAME BINARY ARGS...: runs one case, appends "rss_mib|seconds|outcome" to $WORK/NAME.
measure() {
    local name=$1 bin=$2
    shift 2
    local log="$WORK/$name.time"
    local status=0
    /usr/bin/time -v "$bin" "$@" >"$WORK/$name.out" 2>"$log" || status=$?
    local rss secs outcome
    rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2 / 1024}' "$log")
    secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, t, ":"); s = 0;
        for (i = 1; i <= n; i++) s = s * 60 + t[i]; printf "%.1f", s}' "$log")
    if grep -q "Command terminated by signal" "$log"; then
        outcome="killed by signal $(awk '/Command terminated by signal/ {print $NF}' "$log")"
    else
        outcome="exit $status"
    fi
    local counts
    counts=$(grep -oE '[0-9]+ rows? in rejects.parquet|[0-9]+ of [0-9]+ files written' "$WORK/$name.out" | tail -1 || true)
    echo "$rss|$secs|$outcome${counts:+, $counts}" >"$WORK/$name.result"
}

# The inputs.
"$LUNGSEG" -q synth --out "$WORK/tree" --patients 40 --seed 1
cp -r "$WORK/tree" "$WORK/bombs"
first_nodule=$(find "$WORK/bombs" -mindepth 2 -maxdepth 2 -type d | sort | head -1)
mkpng bomb-8-0 "$first_nodule/images/bomb-gray8.png" 60000 60000
mkpng bomb-16-0 "$first_nodule/images/bomb-gray16.png" 60000 60000
mkpng bomb-8-6 "$first_nodule/images/bomb-rgba8.png" 60000 60000
cp -r "$WORK/tree" "$WORK/bomb8"
first_nodule8=$(find "$WORK/bomb8" -mindepth 2 -maxdepth 2 -type d | sort | head -1)
cp "$first_nodule/images/bomb-gray8.png" "$first_nodule8/images/"
bomb_bytes=$(stat -c %s "$first_nodule/images/bomb-gray8.png")

"$LUNGSEG" -q prepare --input "$WORK/tree" --out "$WORK/run-data"
"$LUNGSEG" -q split --data "$WORK/run-data"
"$LUNGSEG" -q train --data "$WORK/run-data" --run "$WORK/run" --device cpu \
    --base-channels 4 --patch 32 --batch-size 4 --max-epochs 1 --max-steps-per-epoch 2 \
    --min-precision 0
mkdir -p "$WORK/predict-bomb"
cp "$first_nodule/images/bomb-rgba8.png" "$WORK/predict-bomb/"
for side in $SIZES; do
    mkdir -p "$WORK/slice-$side"
    mkpng slice "$WORK/slice-$side/s$side.png" "$side" "$side"
done

# The cases: name | description | arguments (after the binary) | baseline too?
cases=(
    "prepare-clean|prepare, 40-patient synthetic tree|prepare --input $WORK/tree --out $WORK/d-clean|yes"
    "prepare-bomb8|prepare, same tree + one 8-bit 60000x60000 bomb ($bomb_bytes bytes)|prepare --input $WORK/bomb8 --out $WORK/d-bomb8|yes"
    "prepare-bombs|prepare, same tree + 60000x60000 bombs: 8-bit, 16-bit, RGBA|prepare --input $WORK/bombs --out $WORK/d-bombs|no"
    "predict-bomb|predict, one RGBA 60000x60000 bomb|predict --device cpu --run $WORK/run --input $WORK/predict-bomb --out $WORK/p-bomb|no"
)
for side in $SIZES; do
    mp=$((side * side > 16777216 ? side * side : 16777216))
    baseline=$([[ $side -le 2048 ]] && echo yes || echo no)
    cases+=("predict-$side|predict, one ${side}x${side} slice (width-4 U-Net)|predict --device cpu --run $WORK/run --input $WORK/slice-$side --out $WORK/p-$side --max-pixels $mp|$baseline")
done

for c in "${cases[@]}"; do
    IFS='|' read -r name _ args with_baseline <<<"$c"
    echo "measuring $name" >&2
    # shellcheck disable=SC2086  # the arguments are paths without spaces
    measure "$name" "$LUNGSEG" $args
    if [[ -n "$BASELINE" && $with_baseline == yes ]]; then
        rm -rf "$WORK"/d-* "$WORK"/p-*
        # --max-pixels does not exist there.
        # shellcheck disable=SC2086
        measure "$name-baseline" "$BASELINE" ${args% --max-pixels*}
    fi
    rm -rf "$WORK"/d-* "$WORK"/p-*
done

echo
if [[ -n "$BASELINE" ]]; then
    echo "| case | peak RSS | wall | outcome | baseline peak RSS | baseline wall | baseline outcome |"
    echo "|---|---|---|---|---|---|---|"
else
    echo "| case | peak RSS | wall | outcome |"
    echo "|---|---|---|---|"
fi
for c in "${cases[@]}"; do
    IFS='|' read -r name what _ with_baseline <<<"$c"
    IFS='|' read -r rss secs outcome <"$WORK/$name.result"
    line="| $what | $rss MiB | $secs s | $outcome |"
    if [[ -n "$BASELINE" ]]; then
        if [[ $with_baseline == yes ]]; then
            IFS='|' read -r brss bsecs boutcome <"$WORK/$name-baseline.result"
            line+=" $brss MiB | $bsecs s | $boutcome |"
        else
            line+=" not run | | |"
        fi
    fi
    echo "$line"
done

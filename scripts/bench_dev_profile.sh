#!/usr/bin/env bash
# Cold build and warm test-suite times of two dev profiles on the same code (issue #11): the
# revision REV as it is, and REV with the [profile.dev*] sections of OLD_REV's Cargo.toml.
# Each side gets a fresh clone and its own CARGO_TARGET_DIR; the test runs are interleaved.
#
#   scripts/bench_dev_profile.sh [REV] [OLD_REV]     (defaults: HEAD, 8cdafd3)
#
# Prints one line per measurement (wall, user and system seconds) and the tests that passed.
# Takes about 20 minutes on 2 cores; run it on an otherwise idle machine.
set -euo pipefail
REV=${1:-HEAD}
OLD_REV=${2:-8cdafd3}
REPO=$(git rev-parse --show-toplevel)
WORK=${WORK:-/tmp/lungseg-dev-profile}
rm -rf "$WORK" && mkdir -p "$WORK"
for side in new old; do
  git clone -q "$REPO" "$WORK/$side"
  git -C "$WORK/$side" checkout -q "$(git -C "$REPO" rev-parse "$REV")"
done
python3 - "$WORK/old/Cargo.toml" "$(git -C "$REPO" show "$OLD_REV:Cargo.toml")" <<'PY'
import sys
path, old = sys.argv[1], sys.argv[2]
new = open(path).read()
def profile(text):
    return text[text.index("[profile.dev]"):text.index("[profile.release]")]
open(path, "w").write(new.replace(profile(new), profile(old)))
PY
measure() { # side what command...
  local side=$1 what=$2; shift 2
  (cd "$WORK/$side" && CARGO_TARGET_DIR="$WORK/target-$side" /usr/bin/time -f "$side $what: wall %e s, user %U s, sys %S s" \
    "$@" > "$WORK/$side-$what.log" 2>&1) 2>&1 | tail -1
  grep -h 'test result' "$WORK/$side-$what.log" | awk -v s="$side $what" '{p+=$4; f+=$6} END {if (NR) print s": "p" passed, "f" failed"}'
}
for side in old new; do measure "$side" cold-build cargo test --all-targets --no-run; done
for round in 1 2; do
  for side in old new; do measure "$side" "test-$round" cargo test --all-targets; done
done
du -sh "$WORK"/target-old "$WORK"/target-new

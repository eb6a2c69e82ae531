#!/usr/bin/env bash
# tools/datagen_ceilings.py on a small generated set: it runs, and its
# table says what must hold by construction (the truth beats popularity on
# warm users; ranking new items first wins the cold users' AUC; among new
# items popularity ties them all; counted taste sees more than chance).
#   tests/datagen/ceilings.sh VISREC SCRIPT
set -uo pipefail
visrec=$1
script=$2
/usr/bin/python3 -c 'import numpy' 2>/dev/null || { echo "skipped: numpy for /usr/bin/python3 is not installed (deploy/install-deps.sh --test installs python3-numpy)"; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$visrec" datagen --out "$work/d" --no-images --users 400 --items 2000 --interactions 20000 \
	--seed 3 >/dev/null || { echo "FAIL: datagen"; exit 1; }
out=$(/usr/bin/python3 "$script" "$work/d") || { echo "FAIL: the script failed: $out"; exit 1; }
echo "$out"
col() { awk -v r="$1" -v c="$2" 'index($0, r) == 1 { n = split($0, f, " "); print f[n - 4 + c] }' <<<"$out"; }
check() { awk -v a="$1" -v b="$2" "BEGIN { exit !(a $3 b) }" || { echo "FAIL: $4 ($1 $3 $2)"; exit 1; }; }
check "$(col truth 2)" "$(col popularity 2)" '>' "the truth beats popularity on warm users"
check "$(col 'new items first' 3)" 0.9 '>' "new items first wins the cold users' AUC"
check "$(col popularity 4)" 0.5 '==' "popularity ties every new item"
check "$(col 'counted taste' 4)" 0.55 '>' "counted taste sees more than chance among new items"
! /usr/bin/python3 "$script" "$work/none" 2>"$work/err" || { echo "FAIL: a missing folder is not an error"; exit 1; }
grep -q "is not a datagen output" "$work/err" || { echo "FAIL: error text: $(cat "$work/err")"; exit 1; }
echo "ok"

#!/usr/bin/env bash
# `visrec vectors` against a real featured on loopback: a small ingest, an
# export of every item read back with numpy (tests/clients/python_client.sh
# compares it bit for bit with what GetVectors serves a Python client);
# exports of listed ids (--id, --ids, in the order given) equal to rows of
# the full one; unknown ids fail with their names and leave no file, or are
# left out with --skip-missing; a version that does not exist fails with
# featured's message; a bad --ids line is named.
#   tests/clients/vectors.sh FEATURED VISREC WORK_DIR
set -uo pipefail
featured=$1 visrec=$2 work=$3
here=$(cd "$(dirname "$0")" && pwd)
. "$here/daemons.sh"
rm -rf "$work"
mkdir -p "$work"
trap stop_daemons EXIT
failed=0
fail() { echo "FAIL: $*" >&2; failed=1; }

py=$(find_python numpy)
if [ -z "$py" ]; then
	echo "skipped: no python3 with numpy to read the export back (Debian: python3-numpy)"
	exit 77
fi

"$visrec" datagen --out "$work/data" --users 20 --items 40 --interactions 200 \
	--image-min 32 --image-max 64 >"$work/datagen.txt" 2>&1 || { echo "FAIL: datagen" >&2; exit 1; }
start_daemon featured "$featured" --listen 127.0.0.1:0 --data "$work/featured-data"
export VISREC_FEATURED=$addr
"$visrec" ingest "$work/data" >"$work/ingest.txt" 2>&1 || { cat "$work/ingest.txt" >&2; exit 1; }

# Every item.
"$visrec" vectors "$work/all.npy" >"$work/out.txt" 2>&1 || fail "export all: $(cat "$work/out.txt")"
grep -q "^40 vectors of" "$work/out.txt" || fail "export all: $(cat "$work/out.txt")"
[ -s "$work/all.ids.txt" ] || fail "no id list beside all.npy"
ls "$work" | grep -q partial && fail "a .partial file was left: $(ls "$work")"

# Listed ids: some by --id, more by file (one with a Windows line end),
# in an order of their own.
{ sed -n 7p "$work/all.ids.txt"; sed -n 3p "$work/all.ids.txt"; } >"$work/some.ids"
printf '%s\r\n' "$(sed -n 20p "$work/all.ids.txt")" >>"$work/some.ids"
first=$(sed -n 1p "$work/all.ids.txt")
last=$(sed -n 40p "$work/all.ids.txt")
"$visrec" vectors "$work/some.npy" --id "$last" --id="$first" --ids "$work/some.ids" \
	--ids-out "$work/some.list" >"$work/out.txt" 2>&1 || fail "export listed: $(cat "$work/out.txt")"

# Unknown ids: named, nothing written; --skip-missing leaves them out.
"$visrec" vectors "$work/miss.npy" --id "$first" --id no-such-item --id "also missing" \
	>"$work/out.txt" 2>&1
[ $? = 1 ] || fail "unknown ids: expected exit status 1"
grep -q '2 of 3 listed ids are unknown to featured' "$work/out.txt" || fail "unknown ids: $(cat "$work/out.txt")"
grep -q '"no-such-item", "also missing"' "$work/out.txt" || fail "unknown ids not named: $(cat "$work/out.txt")"
ls "$work" | grep -q 'miss\|partial' && fail "a failed export left files: $(ls "$work")"
"$visrec" vectors "$work/skip.npy" --id no-such-item --id "$first" --skip-missing \
	>"$work/out.txt" 2>&1 || fail "--skip-missing: $(cat "$work/out.txt")"

# A version featured does not have: its status and message.
"$visrec" vectors "$work/v99.npy" --version 99 >"$work/out.txt" 2>&1
[ $? = 1 ] || fail "version 99: expected exit status 1"
grep -q 'NOT_FOUND' "$work/out.txt" && grep -q 'model version 99 does not exist' "$work/out.txt" ||
	fail "version 99: $(cat "$work/out.txt")"
ls "$work" | grep -q 'v99\|partial' && fail "a failed export left files: $(ls "$work")"

# Ids from stdin.
sed -n 5p "$work/all.ids.txt" | "$visrec" vectors "$work/stdin.npy" --ids - >"$work/out.txt" 2>&1 ||
	fail "--ids -: $(cat "$work/out.txt")"
grep -q "^1 vectors of" "$work/out.txt" || fail "--ids -: $(cat "$work/out.txt")"
cmp -s <(sed -n 5p "$work/all.ids.txt") "$work/stdin.ids.txt" || fail "--ids -: wrong id list"

# Interrupted (SIGTERM) while featured does not answer (stopped): the
# temporary files existed and are gone, and the exit is the signal's.
kill -STOP "${pids[0]}"
"$visrec" vectors "$work/int.npy" >"$work/out.txt" 2>&1 &
vp=$!
for _ in $(seq 200); do
	ls "$work" | grep -q '^int\.ids\.txt\.partial-' && break
	sleep 0.05
done
ls "$work" | grep -q '^int\.npy\.partial-' || fail "no temporary file while the export waits: $(ls "$work")"
kill -TERM $vp
wait $vp
st=$?
kill -CONT "${pids[0]}"
[ $st = 143 ] || fail "interrupted export: exit status $st, expected 143 (SIGTERM)"
ls "$work" | grep -q '^int\.' && fail "an interrupted export left files: $(ls "$work")"

# A bad line of an --ids file is named with its number.
printf 'ok-id\nbad\tid\n' >"$work/bad.ids"
"$visrec" vectors "$work/bad.npy" --ids "$work/bad.ids" >"$work/out.txt" 2>&1
grep -q 'bad.ids: line 2 "bad\\x09id" contains a control character' "$work/out.txt" ||
	fail "bad --ids line: $(cat "$work/out.txt")"

# Read back with numpy: shapes, the rows of the listed exports equal to
# the full export's rows of those ids, bit for bit, and the header as
# NumPy's own writer would pad it (values at offset 128).
"$py" - "$work" "$first" "$last" <<'PY' || fail "numpy checks (above)"
import sys, numpy as np
w, first, last = sys.argv[1:4]
def load(npy, ids):
    a = np.load(npy)
    names = open(ids, encoding="utf-8").read().split("\n")[:-1]
    assert a.dtype == np.float32 and a.ndim == 2 and a.flags.c_contiguous, (a.dtype, a.shape)
    assert a.shape[0] == len(names), (a.shape, len(names))
    return a, names
a, ids = load(w + "/all.npy", w + "/all.ids.txt")
assert a.shape[0] == 40 and a.shape[1] > 0 and np.isfinite(a).all(), a.shape
assert len(set(ids)) == 40
raw = open(w + "/all.npy", "rb").read()
assert raw[128:] == a.tobytes(), "the values do not start at byte 128"
row = {n: i for i, n in enumerate(ids)}
s, sids = load(w + "/some.npy", w + "/some.list")
want = [last, first, ids[6], ids[2], ids[19]]
assert sids == want, (sids, want)
assert s.tobytes() == a[[row[n] for n in want]].tobytes(), "listed rows differ from the full export"
k, kids = load(w + "/skip.npy", w + "/skip.ids.txt")
assert kids == [first] and k.tobytes() == a[row[first]:row[first] + 1].tobytes()
print("vectors: %d x %d read back; listed and skip-missing exports match" % a.shape)
PY

[ $failed = 0 ] && echo "vectors: ok"
exit $failed

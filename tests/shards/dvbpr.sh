#!/usr/bin/env bash
# DVBPR across featured shards (featured.proto, "DVBPR across shards"), on
# loopback with real daemons and the visrec CLI: three shards and rankd;
# a small DVBPR Train succeeds, the trainer (the first shard of the
# sorted list) caching every shard's images over GetImages and the other
# shards adopting its version V; every item has a vector of V and every
# shard lists V live; Recommend answers; the same run on one featured
# gives the same vectors; a shard that dies (crash point adopt-model, as
# kill -9) before it adopts fails the Train naming it while rankd serves
# its previous model on, and once it is back a Train succeeds everywhere
# and the shard catches up on the version it missed; a Train cancelled
# while a (stopped) shard adopts ends at once.
#   tests/shards/dvbpr.sh FEATURED RANKD VISREC
set -uo pipefail
featured=$1
rankd=$2
visrec=$3
. "$(dirname "$0")/lib.sh"
three_shards
read -r p5 p6 < <(free_ports 2)
S=127.0.0.1:$p5 R1=127.0.0.1:$p6 # one featured and its rankd: the reference
trainer=$(printf '%s\n' "$A" "$B" "$C" | LC_ALL=C sort | head -n 1)
victim=$(printf '%s\n' "$A" "$B" "$C" | LC_ALL=C sort | tail -n 1)
declare -A shard_pid
shard() { # shard ADDR [ENV=VALUE...]: starts the shard at ADDR (data kept across restarts)
	local a=$1; shift
	start "shard $a" "$work/f-$a.out" env "$@" "$featured" --listen "$a" --data "$work/f-$a" \
		--shards "$list" --shard-self "$a"
	shard_pid[$a]=$started
}
train=(train --model dvbpr --epochs 2 --arch small --input-size 16 --batch-size 64 --visual-dims 16
	--cnn-lr 3e-3 --triples-per-epoch 640 --seed 5)
# rfield FIELD: a field of rankd's Info.
rfield() {
	"$visrec" --json info 2>/dev/null | python3 -c '
import json, sys; print(json.load(sys.stdin)["rankd"].get(sys.argv[1], 0))' "$1"
}
# live_on ADDR V: shard ADDR lists model version V as live.
live_on() {
	"$visrec" --featured "$1" --json info 2>/dev/null | python3 -c '
import json, sys
m = json.load(sys.stdin)["featured"].get("models", [])
sys.exit(0 if any(x["version"] == int(sys.argv[1]) and x.get("live") for x in m) else 1)' "$2"
}
connected_is() {
	"$visrec" --json info 2>/dev/null | python3 -c '
import json, sys
r = json.load(sys.stdin)["rankd"]
s = [s for s in r.get("featured_shards", []) if s["address"] == sys.argv[1]]
sys.exit(0 if s and bool(s[0].get("connected")) == (sys.argv[2] == "true") else 1)' "$1" "$2"
}
# every_vector NPY: the export holds a vector of each of the data set's items.
every_vector() {
	sort "${1%.npy}.ids.txt" | cmp -s - "$work/want.ids"
}

"$visrec" datagen --out "$work/data" --users 40 --items 60 --interactions 600 --image-min 32 \
	--image-max 48 --seed 7 >/dev/null 2>&1 || die "datagen"
ls "$work/data/images" | sed 's/\.jpg$//' | sort >"$work/want.ids"
# The reference's items are indexed as the shards' are only if rankd meets
# every item in the interactions first (import before ingest).
every_item_interacted=$(python3 - "$work/data/interactions.csv" "$work/want.ids" <<'PY'
import csv, sys
seen = {r[1] for r in list(csv.reader(open(sys.argv[1])))[1:]}
print(int(all(i in seen for i in open(sys.argv[2]).read().split())))
PY
)

step "three shards and rankd: import, ingest, DVBPR"
shard "$A"
shard "$B"
shard "$C"
export VISREC_FEATURED="$B,$C,$A" VISREC_RANKD=$R
start rankd "$work/r.out" "$rankd" --listen "$R" --data "$work/r" --featured "$C,$A,$B"
"$visrec" import "$work/data/interactions.csv" >/dev/null 2>"$work/e" || die "import: $(cat "$work/e")"
"$visrec" ingest --batch 16 "$work/data" >/dev/null 2>"$work/e" || die "ingest: $(cat "$work/e")"
wait_for 30 connected_is "$A" true || die "rankd is not following shard $A"
t0=$(date +%s.%N)
"$visrec" "${train[@]}" >"$work/t1" 2>"$work/e" || die "DVBPR over 3 shards: $(cat "$work/e")"
t1=$(date +%s.%N)
echo "DVBPR Train over 3 shards: $(python3 -c "print('%.1f' % ($t1 - $t0))") s"
V=$(rfield feature_version)
served=$(rfield model_version)
[ "$V" -gt 1 ] 2>/dev/null || fail "rankd serves feature version $V after DVBPR"
grep -q "other shards adopted model version $V of the trainer shard $trainer" "$work/r.out.err" ||
	fail "rankd's log does not show shards adopting version $V from $trainer: $(grep 'Train DVBPR' "$work/r.out.err" | tail -n 3)"
grep -q "cached at 16 px (.*every shard's" "$work/f-$trainer.out.err" ||
	fail "the trainer $trainer did not cache every shard's images: $(grep TrainVisual "$work/f-$trainer.out.err" | head -n 3)"
cached=$(grep -o "TrainVisual [^:]*: [0-9]* item images cached" "$work/f-$trainer.out.err" | tail -n 1 | awk '{print $3}')
[ "$cached" = 60 ] || fail "the trainer cached $cached images, not the map's 60"
for a in "$A" "$B" "$C"; do
	live_on "$a" "$V" || fail "shard $a does not list version $V live"
done
"$visrec" vectors --version "$V" "$work/v3.npy" >/dev/null 2>"$work/e" || fail "vectors of $V: $(cat "$work/e")"
every_vector "$work/v3.npy" || fail "not every item has a vector of $V over the shards ($(wc -l <"$work/v3.ids.txt") ids)"
user=$(sed -n 2p "$work/data/interactions.csv" | cut -d, -f1)
"$visrec" recommend --user "$user" -k 5 >"$work/rec" 2>"$work/e" || fail "recommend: $(cat "$work/e")"
[ "$(grep -c '^ *[0-9]\+  ' "$work/rec")" = 5 ] || fail "recommend -k 5 printed: $(cat "$work/rec")"

step "the same run on one featured"
start "featured $S" "$work/s.out" "$featured" --listen "$S" --data "$work/s"
start "rankd $R1" "$work/r1.out" "$rankd" --listen "$R1" --data "$work/r1" --featured "$S"
one=(--featured "$S" --rankd "$R1")
"$visrec" "${one[@]}" import "$work/data/interactions.csv" >/dev/null 2>"$work/e" || die "import: $(cat "$work/e")"
"$visrec" "${one[@]}" ingest --batch 16 "$work/data" >/dev/null 2>"$work/e" || die "ingest: $(cat "$work/e")"
t0=$(date +%s.%N)
"$visrec" "${one[@]}" "${train[@]}" >/dev/null 2>"$work/e" || die "DVBPR on one featured: $(cat "$work/e")"
t1=$(date +%s.%N)
echo "DVBPR Train on 1 featured: $(python3 -c "print('%.1f' % ($t1 - $t0))") s"
V1=$("$visrec" "${one[@]}" --json info 2>/dev/null | python3 -c '
import json, sys; print(json.load(sys.stdin)["rankd"].get("feature_version", 0))')
"$visrec" "${one[@]}" vectors --version "$V1" "$work/v1.npy" >/dev/null 2>"$work/e" || fail "vectors on one: $(cat "$work/e")"
if [ "$every_item_interacted" = 1 ]; then
	python3 - "$work/v1.npy" "$work/v3.npy" <<'PY' || fail "one featured and three shards trained different nets with the same seed"
import struct, sys
def load(p):
    b = open(p, "rb").read()
    hl = struct.unpack("<H", b[8:10])[0]
    head = b[10:10 + hl].decode()
    shape = eval(head[head.index("'shape'") + 8:].split(")")[0] + ")")
    n, d = shape
    vals = struct.unpack("<%df" % (n * d), b[10 + hl:10 + hl + 4 * n * d])
    ids = open(p[:-4] + ".ids.txt").read().split()
    return {ids[i]: vals[i * d:(i + 1) * d] for i in range(n)}
a, b = load(sys.argv[1]), load(sys.argv[2])
assert a.keys() == b.keys(), "different items"
diff = max(abs(x - y) for k in a for x, y in zip(a[k], b[k]))
scale = max(abs(x) for k in a for x in a[k])
print("one vs three shards, same seed: max |difference| %.3g (largest value %.3g)" % (diff, scale))
sys.exit(0 if diff <= 1e-4 * max(scale, 1) else 1)
PY
else
	echo "not compared with one featured: some item has no interaction (its index would differ)"
fi

step "a shard that dies before it adopts"
stop_pid "shard $victim" "${shard_pid[$victim]}"
shard "$victim" VISREC_FAULT=adopt-model
wait_for 30 connected_is "$victim" true || fail "rankd did not reconnect to $victim"
"$visrec" "${train[@]}" >/dev/null 2>"$work/e" && fail "DVBPR with $victim dying before it adopts succeeded"
has "dying shard" "featured shard $victim did not adopt model version" "$(cat "$work/e")"
has "dying shard" "UNAVAILABLE" "$(cat "$work/e")"
crashed "shard $victim" "${shard_pid[$victim]}"
[ "$st" = 86 ] || fail "shard $victim exited with $st, not at its crash point (86)"
[ "$(rfield model_version)" = "$served" ] || fail "rankd's served model changed after a failed Train: $(rfield model_version), was $served"
[ "$(rfield feature_version)" = "$V" ] || fail "rankd's feature version changed after a failed Train"
"$visrec" recommend --user "$user" -k 5 >"$work/rec2" 2>"$work/e" || fail "recommend after the failed Train: $(cat "$work/e")"
cmp -s "$work/rec" "$work/rec2" || fail "recommend changed after a failed Train: $(cat "$work/rec2")"

step "the shard back: DVBPR again"
shard "$victim"
wait_for 30 connected_is "$victim" true || fail "rankd did not reconnect to $victim"
"$visrec" "${train[@]}" >/dev/null 2>"$work/e" || fail "DVBPR with every shard back: $(cat "$work/e")"
V2=$(rfield feature_version)
[ "$V2" -gt "$V" ] 2>/dev/null || fail "the new Train serves feature version $V2, not one after $V"
for a in "$A" "$B" "$C"; do
	live_on "$a" "$V2" || fail "shard $a does not list version $V2 live"
done
# The shard that missed V got it with V2: every shard holds the same versions.
versions() {
	"$visrec" --featured "$1" --json info 2>/dev/null | python3 -c '
import json, sys; print(sorted(m["version"] for m in json.load(sys.stdin)["featured"].get("models", [])))'
}
for a in "$A" "$B" "$C"; do
	[ "$(versions "$a")" = "$(versions "$trainer")" ] ||
		fail "shard $a holds versions $(versions "$a"), the trainer $(versions "$trainer")"
done
"$visrec" vectors --version "$V2" "$work/v4.npy" >/dev/null 2>"$work/e" || fail "vectors of $V2: $(cat "$work/e")"
every_vector "$work/v4.npy" || fail "not every item has a vector of $V2 ($(wc -l <"$work/v4.ids.txt") ids)"

step "a Train cancelled while a shard adopts"
# The victim stops (SIGSTOP) once the session has started, so the Train's
# AdoptModel to it hangs; cancelling the Train (its CLI killed) must end it
# at once, naming the shard, with the previous model served on, not after
# AdoptModel's 30-minute deadline. The session trains long enough (600
# steps) for the stop to land before its end.
served=$(rfield model_version)
long=("${train[@]}")
long[4]=6 # --epochs
long[16]=6400 # --triples-per-epoch
[ "${long[3]}" = --epochs ] && [ "${long[15]}" = --triples-per-epoch ] || die "train's flags moved"
started_n=$(grep -c "Train DVBPR: session .* started" "$work/r.out.err")
adopted_n=$(grep -c "other shards adopted model version" "$work/r.out.err")
"$visrec" "${long[@]}" >"$work/t5" 2>"$work/e5" &
cli=$!
session_started() { [ "$(grep -c "Train DVBPR: session .* started" "$work/r.out.err")" -gt "$started_n" ]; }
wait_for 60 session_started || die "the long DVBPR session did not start: $(cat "$work/e5")"
kill -STOP "${shard_pid[$victim]}"
re_embedded_n=$(grep -c "Train DVBPR: featured re-embedded" "$work/r.out.err")
finishing() { [ "$(grep -c "Train DVBPR: featured re-embedded" "$work/r.out.err")" -gt "$re_embedded_n" ]; }
if ! wait_for 120 finishing; then
	kill -CONT "${shard_pid[$victim]}"
	die "the long session did not reach its Finish: $(tail -n 3 "$work/r.out.err")"
fi
sleep 1
[ "$(grep -c "other shards adopted model version" "$work/r.out.err")" = "$adopted_n" ] ||
	fail "every shard adopted though $victim was stopped"
t0=$SECONDS
kill -TERM "$cli"
wait "$cli" 2>/dev/null
cancelled() { grep -q "cancelled while the other shards adopted model version" "$work/r.out.err"; }
wait_for 10 cancelled || fail "rankd did not end the Train within 10 s of its cancel while $victim adopted: $(grep 'Train' "$work/r.out.err" | tail -n 2)"
echo "Train cancelled during adoption ended in $((SECONDS - t0)) s"
has "cancel during adoption" "$victim not done" "$(grep 'cancelled while the other shards' "$work/r.out.err")"
kill -CONT "${shard_pid[$victim]}"
[ "$(rfield model_version)" = "$served" ] || fail "rankd's served model changed after a cancelled Train: $(rfield model_version), was $served"
"$visrec" "${train[@]}" >/dev/null 2>"$work/e" || fail "DVBPR after a Train cancelled during adoption: $(cat "$work/e")"
V3=$(rfield feature_version)
for a in "$A" "$B" "$C"; do
	live_on "$a" "$V3" || fail "shard $a does not list version $V3 live after the cancelled Train"
done

[ $failed = 0 ] && echo "shards dvbpr: ok"
exit $failed

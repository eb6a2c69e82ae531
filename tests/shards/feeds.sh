#!/usr/bin/env bash
# rankd follows every featured shard's change feed, on loopback with real
# daemons and the visrec CLI: three shards and a rankd trained on them;
# new items ingested over the shards become scorable (their vectors
# folded in) without a Train; an idle rankd following three feeds uses
# no CPU; a shard killed with -9 is named by rankd's Info and Health while
# Recommend and Score keep answering and Train is refused naming it; the
# shard restarted, items ingested on it are caught up, each shard's feed
# position ends at the shard's last change (none missed, none twice); a
# restarted rankd resumes every shard's feed where it was.
#   tests/shards/feeds.sh FEATURED RANKD VISREC
set -uo pipefail
featured=$1
rankd=$2
visrec=$3
. "$(dirname "$0")/lib.sh"
three_shards
declare -A shard_pid
shard() { # shard ADDR: starts the featured shard at ADDR (its data kept across restarts)
	: >"$work/f-$1.out"
	start "shard $1" "$work/f-$1.out" "$featured" --listen "$1" --data "$work/f-$1" \
		--shards "$list" --shard-self "$1"
	shard_pid[$1]=$started
}
rankd_start() {
	: >"$work/r.out"
	start rankd "$work/r.out" "$rankd" --listen "$R" --data "$work/r" --featured "$C,$A,$B"
	rankd_pid=$started
}
# shard_field ADDR FIELD: a field of rankd's featured_shards entry of ADDR.
shard_field() {
	rinfo | python3 -c '
import json, sys
r = json.load(sys.stdin)
s = [s for s in r.get("featured_shards", []) if s["address"] == sys.argv[1]]
v = s[0].get(sys.argv[2]) if s else "missing"
print({True: "true", False: "false", None: "none"}.get(v, v))' "$1" "$2"
}
connected_is() { [ "$(shard_field "$1" connected)" = "$2" ]; }
# new_items DIR PREFIX N: N copies of the data set's images under new ids.
new_items() {
	mkdir -p "$1"
	ls "$work/data/images" | head -n "$3" | while read -r f; do cp "$work/data/images/$f" "$1/$2$f"; done
	ls "$1" | sed 's/\.jpg$//' >"$1.ids"
}

"$visrec" datagen --out "$work/data" --users 40 --items 200 --interactions 1200 --image-min 32 \
	--image-max 48 --seed 7 >/dev/null 2>&1 || die "datagen"
shard "$A"
shard "$B"
shard "$C"
export VISREC_FEATURED="$B,$C,$A" VISREC_RANKD=$R
"$visrec" ingest --batch 16 "$work/data" >/dev/null 2>"$work/e" || die "ingest: $(cat "$work/e")"
rankd_start
"$visrec" import "$work/data/interactions.csv" >/dev/null 2>"$work/e" || die "import: $(cat "$work/e")"
"$visrec" train --model vbpr --epochs 2 >/dev/null 2>"$work/e" || die "train vbpr: $(cat "$work/e")"
user=$(sed -n 2p "$work/data/interactions.csv" | cut -d, -f1)

# Info lists every shard, each connected with its own feed position.
n=$(rinfo | python3 -c 'import json, sys; print(len(json.load(sys.stdin).get("featured_shards", [])))')
[ "$n" = 3 ] || fail "rankd's Info lists $n featured shards, not 3"
wait_for 10 heads_match "$A" "$B" "$C" || fail "rankd's feed positions are not the shards' last seqs: $(rinfo)"

# New items over every shard become scorable without a Train.
new_items "$work/new1" n1- 45
scorable "$work/new1.ids" && fail "new items scored before they were ingested"
"$visrec" --json ingest --batch 8 "$work/new1" >"$work/in1.json" 2>"$work/e" || fail "ingest new: $(cat "$work/e")"
spread=$(python3 -c '
import json, sys; r = json.load(open(sys.argv[1])); print(sum(1 for s in r["shards"] if s["accepted"]))' "$work/in1.json")
[ "$spread" = 3 ] || fail "45 new items landed on $spread shards, not 3"
wait_for 20 scorable "$work/new1.ids" ||
	fail "new items on 3 shards did not become scorable without a Train: $(cat "$work/score.err") $(head -c 600 "$work/score.json")"
wait_for 10 heads_match "$A" "$B" "$C" || fail "after ingest, feed positions are not the shards' last seqs: $(rinfo)"

# Idle: three open Watches cost no CPU (ticks of utime + stime over 3 s).
ticks() { awk '{print $14 + $15}' "/proc/$rankd_pid/stat"; }
if [ -r "/proc/$rankd_pid/stat" ]; then
	sleep 1
	t0=$(ticks); sleep 3; t1=$(ticks)
	[ $((t1 - t0)) -le 5 ] || fail "idle rankd following 3 shards used $((t1 - t0)) ticks in 3 s"
	echo "idle rankd: $((t1 - t0)) CPU ticks in 3 s"
fi

# Shard B dies (kill -9): rankd names it, serves on, refuses Train.
kill -KILL "${shard_pid[$B]}"; wait "${shard_pid[$B]}" 2>/dev/null
wait_for 15 connected_is "$B" false || fail "rankd's Info does not show shard $B down: $(rinfo)"
connected_is "$A" true && connected_is "$C" true || fail "shards A and C should stay connected: $(rinfo)"
err=$(shard_field "$B" last_error)
[ -n "$err" ] && [ "$err" != none ] || fail "no last_error for the dead shard: $(rinfo)"
since=$(shard_field "$B" since_unix_ms)
[ "${since//[^0-9]/}" -gt $(( ($(date +%s) - 60) * 1000 )) ] || fail "since_unix_ms of the dead shard is $since"
rhealth() { # rhealth SERVICE: rankd's health status of SERVICE
	"$visrec" --json health --rankd-service "$1" 2>/dev/null | python3 -c '
import json, sys
# The documents printed (an error of featured may come first): the result.
text, at, docs = sys.stdin.read(), 0, []
while text[at:].strip():
    doc, end = json.JSONDecoder().raw_decode(text[at:].lstrip())
    at += len(text[at:]) - len(text[at:].lstrip()) + end
    docs.append(doc)
print([d["rankd"] for d in docs if "rankd" in d][-1])'
}
[ "$(rhealth "visrec.v1.Rank/featured/$B")" = NOT_SERVING ] || fail "Health of shard $B: $(rhealth "visrec.v1.Rank/featured/$B")"
[ "$(rhealth "visrec.v1.Rank/featured/$A")" = SERVING ] || fail "Health of shard $A: $(rhealth "visrec.v1.Rank/featured/$A")"
[ "$(rhealth "visrec.v1.Rank/Train")" = NOT_SERVING ] || fail "Health of Train with a shard down: $(rhealth visrec.v1.Rank/Train)"
[ "$(rhealth "")" = SERVING ] || fail "rankd as a whole should stay SERVING: $(rhealth "")"
"$visrec" recommend --user "$user" -k 5 >"$work/rec" 2>"$work/e" || fail "recommend with a shard down: $(cat "$work/e")"
[ "$(grep -c '^ *[0-9]\+  ' "$work/rec")" = 5 ] || fail "recommend -k 5 with a shard down printed: $(cat "$work/rec")"
scorable "$work/new1.ids" || fail "score with a shard down: $(cat "$work/score.err")"
"$visrec" train --model vbpr --epochs 1 >/dev/null 2>"$work/e" && fail "Train ran with shard $B down"
has "train refused" "UNAVAILABLE" "$(cat "$work/e")"
has "train names the shard" "$B" "$(cat "$work/e")"
grep -q "featured $B is not reachable" "$work/r.out.err" || fail "rankd's log does not name the dead shard"

# B is back: its follower resumes from its own position; items put on
# the shards meanwhile and after are caught up.
shard "$B"
wait_for 20 connected_is "$B" true || fail "rankd did not reconnect to shard $B: $(rinfo)"
[ "$(rhealth "visrec.v1.Rank/Train")" = SERVING ] || fail "Health of Train with every shard back: $(rhealth visrec.v1.Rank/Train)"
new_items "$work/new2" n2- 45
"$visrec" --json ingest --batch 8 "$work/new2" >/dev/null 2>"$work/e" || fail "ingest after restart: $(cat "$work/e")"
wait_for 20 scorable "$work/new2.ids" || fail "items ingested after shard $B returned are not scorable: $(cat "$work/score.err")"
wait_for 10 heads_match "$A" "$B" "$C" || fail "after shard $B's return, feed positions are not the shards' last seqs: $(rinfo)"
items=$(rinfo | python3 -c 'import json, sys; print(json.load(sys.stdin)["items"])')
[ "$items" = 290 ] || fail "rankd holds $items items, not 200 + 45 + 45"

# rankd restarted: every shard's feed resumes where it was.
before=()
for a in "$A" "$B" "$C"; do before[${#before[@]}]="$a=$(shard_field "$a" seq)"; done
stop_pid rankd "$rankd_pid"
rankd_start
for x in "${before[@]}"; do
	a=${x%%=*}
	[ "$(shard_field "$a" seq)" = "${x#*=}" ] || fail "rankd restarted at seq $(shard_field "$a" seq) of shard $a, not ${x#*=}"
done
scorable "$work/new2.ids" || fail "after a restart, new items do not score: $(cat "$work/score.err")"
new_items "$work/new3" n3- 30
"$visrec" ingest --batch 8 "$work/new3" >/dev/null 2>"$work/e" || fail "ingest after rankd restart: $(cat "$work/e")"
wait_for 20 scorable "$work/new3.ids" || fail "items ingested after rankd's restart are not scorable"
wait_for 10 heads_match "$A" "$B" "$C" || fail "after rankd's restart, feed positions are not the shards' last seqs: $(rinfo)"
"$visrec" train --model vbpr --epochs 1 >/dev/null 2>"$work/e" || fail "train with every shard up: $(cat "$work/e")"

[ $failed = 0 ] && echo "shards feeds: ok"
exit $failed

#!/usr/bin/env bash
# featured shards on loopback, real daemons and the visrec CLI: three
# shards and a rankd given the same shard list in different orders; an
# ingest of generated JPEGs puts every item on exactly the shard that
# owns it (each shard asked), rankd trains VBPR on every shard's vectors
# and recommends; a shard that dies mid-ingest (a crash point right after
# a commit: what kill -9 leaves) is named by the CLI with the items it did
# not confirm while the other shards store theirs, and rankd keeps
# serving; parties holding another list are refused; featured refuses
# bad --shards/--shard-self at start.
#   tests/shards/shards.sh FEATURED RANKD VISREC
set -uo pipefail
featured=$1
rankd=$2
visrec=$3
. "$(dirname "$0")/lib.sh"
three_shards
shard() { # shard K ADDR [env...]: starts featured shard K
	local k=$1 addr=$2; shift 2
	start "shard $k" "$work/f$k.out" env "$@" "$featured" --listen "$addr" --data "$work/f$k" \
		--shards "$list" --shard-self "$addr"
}

# Start-up refusals.
"$featured" --listen "$A" --data "$work/bad" --shards "$list" >"$work/o" 2>"$work/e" &&
	fail "--shards without --shard-self started"
has "no --shard-self" "--shards and --shard-self go together" "$(cat "$work/e")"
"$featured" --listen "$A" --data "$work/bad" --shards "$list" --shard-self 127.0.0.1:1 >"$work/o" 2>"$work/e" &&
	fail "a --shard-self outside the list started"
has "self not listed" "--shard-self 127.0.0.1:1 is not one of --shards" "$(cat "$work/e")"
"$featured" --listen "$A" --data "$work/bad" --shards "$A,,$B" --shard-self "$A" >"$work/o" 2>"$work/e" &&
	fail "a list with an empty entry started"
has "bad list" "entry 2 of the shard list is empty" "$(cat "$work/e")"

"$visrec" datagen --out "$work/data" --users 40 --items 300 --interactions 1500 --image-min 32 \
	--image-max 48 --seed 5 >/dev/null 2>&1 || die "datagen"
shard 1 "$A"
shard 2 "$B"
shard 3 "$C"
# The CLI holds the same list in another order.
export VISREC_FEATURED="$C,$A,$B" VISREC_RANKD=$R

# Ingest: every image stored, on its own shard.
"$visrec" ingest --batch 16 "$work/data" >"$work/ingest.out" 2>"$work/ingest.err" ||
	fail "ingest exited $?: $(cat "$work/ingest.err")"
has "ingest" "300 stored, 0 rejected, 0 shard(s) failed" "$(cat "$work/ingest.out")"
for a in "$A" "$B" "$C"; do has "ingest per shard" "shard $a: " "$(cat "$work/ingest.out")"; done
total=0
for a in "$A" "$B" "$C"; do
	# One address: Info answers without the map (it reports the map).
	n=$("$visrec" --featured "$a" --json info 2>/dev/null | python3 -c '
import json, sys
f = json.load(sys.stdin)["featured"]
print(f["items"], f["shard_self"], f["shard_map"], len(f["shards"]))')
	read -r items self map count <<<"$n"
	[ "$self" = "$a" ] && [ "$count" = 3 ] || fail "shard $a's Info: $n"
	[ "$items" -gt 50 ] || fail "shard $a holds $items items: rendezvous should spread 300 over 3"
	maps+=" $map"
	total=$((total + items))
done
[ "$total" = 300 ] || fail "the shards hold $total items together, not 300"
[ "$(tr ' ' '\n' <<<"$maps" | sort -u | grep -c .)" = 1 ] || fail "shards report different maps:$maps"
# Every item once over all shards: the vectors of all of them.
"$visrec" vectors "$work/all.npy" 2>"$work/e" || fail "vectors: $(cat "$work/e")"
ls "$work/data/images" | sed 's/\.jpg$//' | sort >"$work/want.ids"
sort "$work/all.ids.txt" >"$work/got.ids"
cmp -s "$work/want.ids" "$work/got.ids" ||
	fail "the shards' items are not each image once ($(wc -l <"$work/got.ids") ids)"

# Another list is refused, naming both maps; so is a client with none.
"$visrec" --featured "$A,$B" vectors "$work/x.npy" >/dev/null 2>"$work/e" &&
	fail "a 2-shard list was served by a 3-shard map"
has "mismatch" "FAILED_PRECONDITION" "$(cat "$work/e")"
has "mismatch" "holds a map of 3 shards" "$(cat "$work/e")"
has "mismatch" "made with a map of 2 shards" "$(cat "$work/e")"
"$visrec" --featured "$B" vectors "$work/x.npy" >/dev/null 2>"$work/e" &&
	fail "a client without the map was served by a shard"
has "no map" "made with no shard map" "$(cat "$work/e")"

# rankd over every shard: it trains VBPR on all 300 vectors and recommends.
start rankd "$work/r.out" "$rankd" --listen "$R" --data "$work/r" --featured "$B,$C,$A"
"$visrec" import "$work/data/interactions.csv" >/dev/null 2>"$work/e" || fail "import: $(cat "$work/e")"
"$visrec" train --model vbpr --epochs 3 >/dev/null 2>"$work/e" || fail "train vbpr: $(cat "$work/e")"
grep -q "Train VBPR: 300 vectors" "$work/r.out.err" ||
	fail "rankd did not train on 300 vectors: $(grep 'Train VBPR' "$work/r.out.err")"
user=$(sed -n 2p "$work/data/interactions.csv" | cut -d, -f1)
"$visrec" recommend --user "$user" -k 5 >"$work/rec" 2>"$work/e" || fail "recommend: $(cat "$work/e")"
[ "$(grep -c '^ *[0-9]\+  ' "$work/rec")" = 5 ] || fail "recommend -k 5 printed: $(cat "$work/rec")"

# Shard B dies during an ingest of 300 new items, right after its second
# batch commit; the CLI names it and every item it did not confirm, A and
# C store all of theirs.
mkdir -p "$work/more"
for f in "$work"/data/images/*.jpg; do cp "$f" "$work/more/n-$(basename "$f")"; done
stop_pid "shard B" "${pids[1]}"
shard 2 "$B" VISREC_FAULT=featured-batch-committed@2
st=0
"$visrec" --json ingest --batch 4 --streams 1 "$work/more" >"$work/kill.json" 2>"$work/kill.err" || st=$?
[ $st = 1 ] || fail "ingest with a dead shard: exit status $st, expected 1"
has "dead shard" "featured shard $B failed during PutItems: UNAVAILABLE" "$(cat "$work/kill.err")"
has "dead shard" "shard $B did not confirm" "$(cat "$work/kill.err")"
python3 - "$work/kill.json" "$B" <<'PY' || fail "per-shard report of the dead shard"
import json, sys
r = json.load(open(sys.argv[1])); dead = sys.argv[2]
by = {s["shard"]: s for s in r["shards"]}
d = by[dead]
assert d["failed"] and d["failed"]["status"] == "UNAVAILABLE", d["failed"]
assert d["unconfirmed"] and len(d["unconfirmed"]) + d["accepted"] == d["files"], d
for name, s in by.items():
    if name != dead:
        assert s["failed"] is None and s["accepted"] == s["files"] > 0, s
print("dead shard: %d of %d items unconfirmed" % (len(d["unconfirmed"]), d["files"]))
PY
for a in "$A" "$C"; do
	n=$("$visrec" --featured "$a" --json info 2>/dev/null | python3 -c '
import json, sys; print(json.load(sys.stdin)["featured"]["items"])')
	want=$(python3 -c '
import json, sys; r = json.load(open(sys.argv[1]))
print([s["files"] for s in r["shards"] if s["shard"] == sys.argv[2]][0])' "$work/kill.json" "$a")
	[ "$n" -gt "$want" ] || fail "shard $a holds $n items after storing its $want new ones"
done
# rankd keeps serving with a shard down.
"$visrec" recommend --user "$user" -k 5 >"$work/rec" 2>"$work/e" || fail "recommend with a shard down: $(cat "$work/e")"
[ "$(grep -c '^ *[0-9]\+  ' "$work/rec")" = 5 ] || fail "recommend with a shard down printed: $(cat "$work/rec")"

[ $failed = 0 ] && echo "shards: ok"
exit $failed

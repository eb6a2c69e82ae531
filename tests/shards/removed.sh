#!/usr/bin/env bash
# A reshard as rankd sees it, on loopback with real daemons: two featured
# shards hold 300 ingested JPEGs and a rankd following both serves a VBPR
# model trained on them; a third shard joins (--models-from) and `visrec
# reshard --from A,B --to A,B,C` moves the items C now owns, while rankd
# keeps running on the old list. Each item a source deletes comes down its
# feed as a REMOVED change: rankd's position in each source's feed ends at
# the source's last change, Info counts per shard the items that left it
# (exactly those it lost, the hash computed here as shardmap.h defines
# it; a source killed right after a delete's commit and restarted
# included), rankd still holds every item once and scores the moved ones with
# their vectors, and Train is refused naming a source until rankd runs
# with the new list. Then every party on the new list (rankd restarted):
# the same items, each once, the moved ones still scored, nothing counted,
# and Train runs.
#   tests/shards/removed.sh FEATURED RANKD VISREC
set -uo pipefail
featured=$1
rankd=$2
visrec=$3
. "$(dirname "$0")/lib.sh"
two_to_three

rankd_start() { # rankd_start LIST
	start rankd "$work/r.out" "$rankd" --listen "$R" --data "$work/r" --featured "$1"
	pid[r]=$started
}

step datagen
"$visrec" datagen --out "$work/data" --users 30 --items 300 --interactions 1200 --image-min 32 \
	--image-max 48 --seed 5 >/dev/null 2>&1 || die "datagen"
move_shard a "$A" "$from" --init-seed 7
move_shard b "$B" "$from" --init-seed 7
export VISREC_FEATURED=$from VISREC_RANKD=$R
step "ingest on $from"
"$visrec" ingest --batch 16 "$work/data" >/dev/null 2>"$work/e" || die "ingest: $(cat "$work/e")"
rankd_start "$from"
"$visrec" import "$work/data/interactions.csv" >/dev/null 2>"$work/e" || die "import: $(cat "$work/e")"
step "train vbpr on $from"
"$visrec" train --model vbpr --epochs 2 >/dev/null 2>"$work/e" || die "train vbpr: $(cat "$work/e")"
user=$(sed -n 2p "$work/data/interactions.csv" | cut -d, -f1)
[ "$(items)" = 300 ] || die "rankd holds $(items) items before the move, not 300"
wait_for 10 heads_match "$A" "$B" || die "feed positions before the move: $(rinfo)"
before_a=$(ffield "$A" items) before_b=$(ffield "$B" items)

# The items C owns under the new list (shardmap.h's hash), and so move.
owned_by "$C" "$work/data/images" "$A" "$B" "$C" >"$work/moved.ids"
moving=$(wc -l <"$work/moved.ids")
[ "$moving" -gt 0 ] || die "no item moves to C"

move_shard c "$C" "$to" --models-from "$A"
# Source B dies right after committing its second delete (kill at the
# crash point, exit 86): what it deleted and its REMOVED changes are one
# commit, so the count below holds across it. Restarted, the move resumes.
step "reshard, B dying at its second delete"
stop b
fault=reshard-deleted@2 move_shard b "$B" "$from" --init-seed 7
st=0
"$visrec" reshard --from "$from" --to "$to" --batch 16 >"$work/rs0" 2>&1 || st=$?
[ $st = 1 ] || fail "reshard with B dying: exit $st, not 1: $(cat "$work/rs0")"
crashed "shard B" "${pid[b]}"
[ $st = 86 ] || fail "shard B ended with $st, not the crash point's 86"
step "reshard resumed"
move_shard b "$B" "$from" --init-seed 7
"$visrec" reshard --from "$from" --to "$to" --batch 16 >"$work/rs" 2>&1 || die "reshard: $(cat "$work/rs")"
after_a=$(ffield "$A" items) after_b=$(ffield "$B" items)
[ $((before_a - after_a + before_b - after_b)) = "$moving" ] ||
	fail "the sources lost $((before_a - after_a)) + $((before_b - after_b)) items, $moving moved"

# rankd, still on the old list: each source's feed read to its end (the
# REMOVED changes included), the items that left each counted.
step "rankd on the old list after the move"
wait_for 20 heads_match "$A" "$B" || fail "rankd's feed positions after the move: $(rinfo)"
for x in "a $A $before_a $after_a" "b $B $before_b $after_b"; do
	read -r _ addr b0 b1 <<<"$x"
	got=$(rshard "$addr" removed_owned)
	[ "$got" = $((b0 - b1)) ] || fail "rankd counts $got items that left $addr, it lost $((b0 - b1))"
done
[ "$(items)" = 300 ] || fail "rankd holds $(items) items after the move, not 300"
scorable "$work/moved.ids" || fail "moved items do not score on rankd after the move: $(cat "$work/score.err")"
"$visrec" recommend --user "$user" -k 5 >"$work/rec" 2>"$work/e" || fail "recommend after the move: $(cat "$work/e")"
"$visrec" info >"$work/info.txt" 2>/dev/null
has "info text" "item(s) it owns under rankd's list left it" "$(cat "$work/info.txt")"
st=0
"$visrec" train --model vbpr --epochs 1 >/dev/null 2>"$work/e" || st=$?
[ $st != 0 ] || fail "Train ran on a shard list the shards left"
has "train refused" "FAILED_PRECONDITION" "$(cat "$work/e")"
grep -qE "featured shard ($A|$B) removed [0-9]+ item" "$work/e" || fail "train does not name a source: $(cat "$work/e")"
has "train says what to do" "run rankd with the new list" "$(cat "$work/e")"
grep -q "the shards were resharded to another list" "$work/r.out.err" || fail "rankd's log does not say its list is behind"
grep -q "could not be applied" "$work/r.out.err" && fail "rankd retried a change: $(grep 'could not be applied' "$work/r.out.err" | head -3)"

# Every party on the new list: rankd restarted with it replays each
# feed from its start under the new map's keys.
step "every party to the new list"
stop a; stop b; stop r
move_shard a "$A" "$to"
move_shard b "$B" "$to"
export VISREC_FEATURED=$to
rankd_start "$to"
wait_for 20 heads_match "$A" "$B" "$C" || fail "feed positions on the new list: $(rinfo)"
[ "$(items)" = 300 ] || fail "rankd holds $(items) items on the new list, not 300"
for a in "$A" "$B" "$C"; do
	[ "$(rshard "$a" removed_owned)" = 0 ] || fail "on the new list rankd counts items that left $a"
done
[ "$(ffield "$C" items)" = "$moving" ] || fail "C holds $(ffield "$C" items) items, owns $moving"
scorable "$work/moved.ids" || fail "moved items do not score on the new list: $(cat "$work/score.err")"
step "train on the new list"
"$visrec" train --model vbpr --epochs 1 >/dev/null 2>"$work/e" || fail "train on the new list: $(cat "$work/e")"
scorable "$work/moved.ids" || fail "moved items do not score after a Train on the new list: $(cat "$work/score.err")"

[ $failed = 0 ] && echo "shards removed: ok"
exit $failed

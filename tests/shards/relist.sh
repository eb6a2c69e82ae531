#!/usr/bin/env bash
# rankd adopting a new shard list without a restart, on loopback with real
# daemons: two featured shards hold 300 ingested JPEGs and a rankd that
# reads its list from a file (--featured-file) serves a VBPR model trained
# on them; a third shard joins (--models-from) and `visrec reshard --from
# A,B --to A,B,C` moves the items C now owns, so rankd on the old list
# counts removed items and refuses Train. The shards restart on the new
# list, the file is rewritten (a rename, as the kubelet swaps a ConfigMap
# volume) and rankd gets SIGHUP: the same rankd process then names three
# shards in Info, follows C's feed from its start (moved items still
# scored, each once), keeps A's and B's feed positions (its log says so),
# counts nothing removed, and Train runs; items ingested afterwards on C
# become scorable through C's feed without a Train; idle, it uses no CPU.
# A file that does not parse leaves the list in use, and the log says why.
#   tests/shards/relist.sh FEATURED RANKD VISREC
set -uo pipefail
featured=$1
rankd=$2
visrec=$3
. "$(dirname "$0")/lib.sh"
two_to_three

nshards() { rinfo | python3 -c 'import json, sys; print(len(json.load(sys.stdin).get("featured_shards", [])))'; }
has_shards() { [ "$(nshards)" = "$1" ]; }
# set_list LIST: the file rewritten as the kubelet does it, by a rename.
set_list() { printf '# the featured shards\n%s\n' "$1" | tr , '\n' >"$work/list.new" && mv "$work/list.new" "$work/list"; }

step datagen
"$visrec" datagen --out "$work/data" --users 30 --items 300 --interactions 1200 --image-min 32 \
	--image-max 48 --seed 5 >/dev/null 2>&1 || die "datagen"
move_shard a "$A" "$from" --init-seed 7
move_shard b "$B" "$from" --init-seed 7
export VISREC_FEATURED=$from VISREC_RANKD=$R
step "ingest on $from"
"$visrec" ingest --batch 16 "$work/data" >/dev/null 2>"$work/e" || die "ingest: $(cat "$work/e")"
set_list "$from"
# SIGHUP only here (the folder's watch is checked at the end).
start rankd "$work/r.out" "$rankd" --listen "$R" --data "$work/r" --featured-file "$work/list" \
	--watch-featured-file=false
pid[r]=$started
"$visrec" import "$work/data/interactions.csv" >/dev/null 2>"$work/e" || die "import: $(cat "$work/e")"
step "train vbpr on $from"
"$visrec" train --model vbpr --epochs 2 >/dev/null 2>"$work/e" || die "train vbpr: $(cat "$work/e")"
user=$(sed -n 2p "$work/data/interactions.csv" | cut -d, -f1)
[ "$(nshards)" = 2 ] || die "rankd follows $(nshards) shards from its file, not 2: $(rinfo)"
wait_for 10 heads_match "$A" "$B" || die "feed positions before the move: $(rinfo)"

owned_by "$C" "$work/data/images" "$A" "$B" "$C" >"$work/moved.ids"
moving=$(wc -l <"$work/moved.ids")
[ "$moving" -gt 0 ] || die "no item moves to C"

step "reshard to $to"
move_shard c "$C" "$to" --models-from "$A"
"$visrec" reshard --from "$from" --to "$to" --batch 16 >"$work/rs" 2>&1 || die "reshard: $(cat "$work/rs")"
wait_for 20 heads_match "$A" "$B" || fail "rankd's feed positions after the move: $(rinfo)"
st=0
"$visrec" train --model vbpr --epochs 1 >/dev/null 2>"$work/e" || st=$?
[ $st != 0 ] || fail "Train ran on the old list after the move (the test's premise)"
has "train refused on the old list" "run rankd with the new list" "$(cat "$work/e")"

# The shards on the new list, then rankd's file and SIGHUP.
step "the shards to the new list"
stop a; stop b
move_shard a "$A" "$to"
move_shard b "$B" "$to"
export VISREC_FEATURED=$to
step "a list that does not parse"
printf '127.0.0.1:notaport\n' >"$work/list.new" && mv "$work/list.new" "$work/list"
kill -HUP "${pid[r]}"
wait_for 10 grep -q "the shard list in use stays" "$work/r.out.err" ||
	fail "rankd's log does not say it kept its list after a bad file: $(tail -3 "$work/r.out.err")"
kill -0 "${pid[r]}" || die "rankd ended on SIGHUP"
[ "$(nshards)" = 2 ] || fail "after a bad file rankd follows $(nshards) shards, not the 2 in use"

step "SIGHUP with the new list"
set_list "$to"
kill -HUP "${pid[r]}"
wait_for 20 has_shards 3 ||
	fail "rankd does not follow 3 shards after SIGHUP: $(rinfo)"
kill -0 "${pid[r]}" || die "rankd ended on SIGHUP"
want=$(tr , '\n' <<<"$to" | LC_ALL=C sort | paste -sd,)
[ "$(rinfo | python3 -c 'import json, sys; print(json.load(sys.stdin)["featured"])')" = "$want" ] ||
	fail "rankd's Info does not show the new list $want: $(rinfo)"
grep -q "2 kept their feed position, 1 new one(s) followed from their start" "$work/r.out.err" ||
	fail "rankd's log does not say A and B kept their positions: $(grep 'shard list now' "$work/r.out.err")"
wait_for 20 heads_match "$A" "$B" "$C" || fail "feed positions on the new list: $(rinfo)"
for a in "$A" "$B" "$C"; do
	[ "$(rshard "$a" removed_owned)" = 0 ] || fail "on the new list rankd counts items that left $a"
done
[ "$(items)" = 300 ] || fail "rankd holds $(items) items on the new list, not 300"
scorable "$work/moved.ids" || fail "moved items do not score on the new list: $(cat "$work/score.err")"
step "train on the new list, same process"
"$visrec" train --model vbpr --epochs 1 >/dev/null 2>"$work/e" || fail "train after SIGHUP: $(cat "$work/e")"

# New items on C come through C's feed, without a Train.
step "new items on C"
mkdir -p "$work/new"
for f in $(ls "$work/data/images" | head -40); do cp "$work/data/images/$f" "$work/new/late-$f"; done
owned_by "$C" "$work/new" "$A" "$B" "$C" >"$work/late.ids"
[ -s "$work/late.ids" ] || die "none of the new items belongs to C"
"$visrec" ingest "$work/new" >/dev/null 2>"$work/e" || fail "ingest on the new list: $(cat "$work/e")"
wait_for 20 scorable "$work/late.ids" || fail "items new on C do not score through its feed: $(cat "$work/score.err")"

# Idle after the switch: no CPU.
step "idle"
sleep 1
ticks() { awk '{print $14 + $15}' "/proc/${pid[r]}/stat"; }
if [ -r "/proc/${pid[r]}/stat" ]; then
	t0=$(ticks); sleep 2; t1=$(ticks)
	[ $((t1 - t0)) -le 4 ] || fail "idle rankd after the switch used $((t1 - t0)) ticks in 2 s"
	echo "idle rankd after the switch: $((t1 - t0)) CPU ticks in 2 s"
fi
stop r
grep -q "could not be applied" "$work/r.out.err" && fail "rankd retried a change: $(grep 'could not be applied' "$work/r.out.err" | head -3)"

# The folder's watch (the default): a second rankd on a file of its own
# adopts a rewritten list without SIGHUP, and keeps its list on a bad one.
step "the watched file"
read -r p5 < <(free_ports 1)
R2=127.0.0.1:$p5
mkdir -p "$work/w"
printf '%s\n' "$to" >"$work/w/shards"
start "rankd 2" "$work/r2.out" "$rankd" --listen "$R2" --data "$work/r2" --featured-file "$work/w/shards"
pid[r2]=$started
export VISREC_RANKD=$R2
has_shards 3 || fail "the second rankd follows $(nshards) shards, not 3"
printf '127.0.0.1:0x\n' >"$work/w/new" && mv "$work/w/new" "$work/w/shards"
wait_for 10 grep -q "a change in its folder: .*the shard list in use stays" "$work/r2.out.err" ||
	fail "a bad rewritten file: rankd's log does not say it kept its list: $(tail -3 "$work/r2.out.err")"
printf '%s\n' "$A" >"$work/w/new" && mv "$work/w/new" "$work/w/shards"
wait_for 10 has_shards 1 || fail "a rewritten file is not adopted without SIGHUP: $(rinfo)"
stop r2

[ $failed = 0 ] && echo "shards relist: ok"
exit $failed

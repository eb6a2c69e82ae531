#!/usr/bin/env bash
# visrec reshard on loopback, real daemons: two featured shards hold 500
# ingested JPEGs; a third shard joins (it runs with the new list of three
# and copies their model versions: --models-from; one that made its own
# is refused) and `visrec reshard --from A,B --to A,B,C` moves the items C now owns.
# It is killed on the way, at three points: the CLI itself after a batch
# was verified on its target and before the source deleted it (crash point
# reshard-verified: the batch is then on two shards and only the source's
# journal knows it), the target C right after committing an import, and
# the source B right after committing a delete. Each time the same command
# is run again and resumes; while the move is under way the sources refuse
# ingest of items that leave them. Afterwards, with every shard restarted
# on the new list: every item on exactly its owner (hash computed here as
# shardmap.h defines it), every vector present once and bit-identical to
# before, the same model versions (and weights files) on every shard, and
# a further run moves nothing and says so. Then one featured without
# --shards goes to two shards the same way.
#   tests/shards/reshard.sh FEATURED VISREC
set -uo pipefail
featured=$1
visrec=$2
. "$(dirname "$0")/lib.sh"
declare -A pid flags
read -r p1 p2 p3 p4 p5 < <(free_ports 5)
A=127.0.0.1:$p1 B=127.0.0.1:$p2 C=127.0.0.1:$p3 D=127.0.0.1:$p4 E=127.0.0.1:$p5
from="$A,$B" to="$A,$B,$C"

# shard NAME ADDR LIST [env...]: (re)starts a featured shard (LIST -: a
# featured without --shards), waits for it.
shard() {
	local name=$1 addr=$2 list=$3; shift 3
	local out="$work/$name.out"
	local sharded=(--shards "$list" --shard-self "$addr")
	[ "$list" = - ] && sharded=()
	start "shard $name" "$out" env "$@" "$featured" --listen "$addr" --data "$work/$name" \
		"${sharded[@]}" ${flags[$name]:-}
	pid[$name]=$started
}
# Waits for a shard killed by a crash point to be gone.
gone() {
	crashed "shard $1" "${pid[$1]}"
	[ $st = 86 ] || fail "shard $1 ended with $st, not the crash point's 86"
}
# info ADDR: featured's Info as JSON (visrec info fails without a rankd:
# its status is not this test's).
info() { "$visrec" --featured "$1" --json info 2>/dev/null || true; }
items() { # items ADDR: the item count Info reports
	info "$1" | python3 -c 'import json, sys; print(json.load(sys.stdin)["featured"]["items"])'
}
reshard() { "$visrec" reshard --from "$from" --to "$to" --batch 8 "$@"; }

"$visrec" datagen --out "$work/data" --users 40 --items 500 --interactions 1500 --image-min 32 \
	--image-max 48 --seed 9 >/dev/null 2>&1 || die "datagen"
# A and B made version 1 from seed 7; C, new, copies theirs (below).
flags[a]="--init-seed 7" flags[b]="--init-seed 7"
shard a "$A" "$from"
shard b "$B" "$from"
VISREC_FEATURED=$from "$visrec" ingest --batch 16 "$work/data" >"$work/ingest.out" 2>&1 ||
	die "ingest: $(cat "$work/ingest.out")"
has "ingest" "500 stored, 0 rejected" "$(cat "$work/ingest.out")"
VISREC_FEATURED=$from "$visrec" vectors "$work/before.npy" 2>"$work/e" || die "vectors: $(cat "$work/e")"

# A new shard that made its own version 1 (another seed) is refused
# before anything moves; one started with --models-from A is not.
shard c "$C" "$to"
st=0
reshard >"$work/r0" 2>&1 || st=$?
[ $st = 1 ] || fail "reshard to a shard of other weights: exit $st, not 1: $(cat "$work/r0")"
has "other models" "model version 1 of featured $C is not that of" "$(cat "$work/r0")"
has "other models" "(other weights)" "$(cat "$work/r0")"
[ "$(items "$C")" = 0 ] || fail "items moved to a shard of other weights"
stop c
rm -rf "$work/c"
flags[c]="--models-from $A"
shard c "$C" "$to"
grep -q "model version 1 (small" "$work/c.out.err" || fail "shard C did not copy A's models: $(cat "$work/c.out.err")"

# 1. The CLI dies at its third verified batch, before the source deletes it.
st=0
VISREC_FAULT=reshard-verified@3 reshard >"$work/r1" 2>&1 || st=$?
[ $st = 86 ] || fail "reshard with the crash point: exit $st, not 86: $(cat "$work/r1")"
# Items on two shards at once: never more than the one batch in flight.
twice() { echo $(( $(items "$A") + $(items "$B") + $(items "$C") - 500 - ${stored_new:-0} )); }
n=$(twice)
[ "$n" -gt 0 ] && [ "$n" -le 8 ] || fail "after the CLI's kill $n items are on two shards, want 1 to 8 (the batch)"

# Info of the first source (the one the kill stopped in) says where it is
# being resharded to.
first=$(tr , '\n' <<<"$from" | LC_ALL=C sort | head -1)
info "$first" | python3 -c '
import json, sys
f = json.load(sys.stdin)["featured"]; to = sys.argv[1].split(",")
assert f["reshard_to"] == ",".join(sorted(to)) and not f["reshard_done"], f' "$to" ||
	fail "Info of a source during the move does not name the list it moves to"

# Meanwhile a source refuses items that leave it; those that stay go in.
mkdir -p "$work/new"
for f in $(ls "$work/data/images" | head -30); do cp "$work/data/images/$f" "$work/new/n-$f"; done
st=0
VISREC_FEATURED=$from "$visrec" --json ingest "$work/new" >"$work/new.json" 2>"$work/new.err" || st=$?
[ $st = 3 ] || fail "ingest during the move: exit $st, not 3 (some refused): $(cat "$work/new.err")"
python3 - "$work/new.json" <<'PY' || fail "ingest during the move: $(cat "$work/new.json")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["rejected"] > 0 and r["accepted"] > 0, r
for e in r["errors"]:
    assert e["status"] == "FAILED_PRECONDITION" and "is being resharded" in e["message"], e
PY
has "refusal" "is being resharded to the shard list" "$(cat "$work/new.json")"
has "refusal" "belongs to $C" "$(cat "$work/new.json")"
stored_new=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["accepted"])' "$work/new.json")

# dies NAME ADDR LIST POINT RPC OUT [flags]: restarts shard NAME to die at
# crash point POINT, runs the reshard (with flags), which must fail naming
# it during RPC, and restarts the shard as it was.
dies() {
	local name=$1 addr=$2 list=$3 point=$4 rpc=$5 out=$6 st=0
	shift 6
	stop "$name"
	shard "$name" "$addr" "$list" VISREC_FAULT="$point"
	reshard "$@" >"$out" 2>&1 || st=$?
	[ $st = 1 ] || fail "reshard with $name dying at $point: exit $st, not 1: $(cat "$out")"
	has "$point" "featured shard $addr failed during $rpc: UNAVAILABLE" "$(cat "$out")"
	gone "$name"
	shard "$name" "$addr" "$list"
}

# 2. The target dies right after committing its second import. The resume
# finished the batch the CLI's kill left (the source's journal held it,
# and answers it whole though this run asks for 3 a claim) before the
# target died with the next one.
dies c "$C" "$to" reshard-imported@2 ReshardImport "$work/r2" --batch 3
n=$(twice)
[ "$n" -gt 0 ] && [ "$n" -le 8 ] || fail "after the target's kill $n items are on two shards, want 1 to 8"

# 3. The source B dies right after committing its second delete.
dies b "$B" "$from" reshard-deleted@2 ReshardDelete "$work/r3"
n=$(twice)
[ "$n" = 0 ] || fail "after the source's kill past its delete $n items are on two shards, want 0"

# 4. Resumed to the end; then again: nothing moves.
reshard >"$work/r4" 2>&1 || fail "resumed reshard: $(cat "$work/r4")"
cat "$work/r4"
has "resumed" "moved by an earlier run" "$(cat "$work/r4")"
reshard >"$work/r5" 2>&1 || fail "reshard after the end: $(cat "$work/r5")"
has "idempotent" "nothing to move" "$(cat "$work/r5")"
for a in "$A" "$B"; do
	info "$a" | python3 -c '
import json, sys
f = json.load(sys.stdin)["featured"]
assert f["reshard_done"] and f["reshard_moved"] > 0, f' || fail "Info of source $a after the move"
done

# The switch: every shard on the new list.
stop a; stop b
shard a "$A" "$to"
shard b "$B" "$to"
VISREC_FEATURED=$to "$visrec" vectors "$work/after.npy" 2>"$work/e" || fail "vectors after: $(cat "$work/e")"
for a in "$A" "$B" "$C"; do echo "$a $(items "$a")"; done >"$work/counts"
python3 - "$work" "$stored_new" "$A" "$B" "$C" <<'PY' || fail "the items after the move"
import struct, sys
work, stored_new, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]

from shardmap import owner as map_owner
def owner(i):
    return map_owner(names, i)
def load(stem):
    raw = open(stem + ".npy", "rb").read()
    hl = struct.unpack("<H", raw[8:10])[0]
    head = raw[10:10 + hl].decode()
    dims = int(head.split("shape")[1].split(",")[1].strip(" )"))
    data = raw[10 + hl:]
    ids = open(stem + ".ids.txt").read().split("\n")[:-1]
    assert len(data) == len(ids) * dims * 4, (len(data), len(ids), dims)
    return {i: data[k * dims * 4:(k + 1) * dims * 4] for k, i in enumerate(ids)}, len(ids)
before, nb = load(work + "/before")
after, na = load(work + "/after")
assert nb == 500 and len(before) == 500, nb
assert na == len(after), "an item is on two shards: %d rows, %d ids" % (na, len(after))
assert na == 500 + stored_new, "%d items after, want %d" % (na, 500 + stored_new)
lost = [i for i in before if i not in after]
assert not lost, "lost: %s" % lost[:5]
changed = [i for i in before if before[i] != after[i]]
assert not changed, "vectors changed: %s" % changed[:5]
counts = dict(l.split() for l in open(work + "/counts"))
want = {n: 0 for n in names}
for i in after:
    want[owner(i)] += 1
for n in names:
    assert int(counts[n]) == want[n], "shard %s holds %s items, owns %d" % (n, counts[n], want[n])
print("reshard: %d items, per shard %s" % (na, counts))
PY
models() {
	info "$1" | python3 -c '
import json, sys
f = json.load(sys.stdin)["featured"]
print(f["active_model"]["version"], [(m["version"], m["arch"], m["dims"], m["output_layer"]) for m in f["models"]])'
}
[ "$(models "$A")" = "$(models "$C")" ] && [ "$(models "$B")" = "$(models "$C")" ] ||
	fail "model versions differ: $(models "$A") / $(models "$B") / $(models "$C")"
for f in "$work"/a/models/*.safetensors; do
	cmp -s "$f" "$work/c/models/$(basename "$f")" || fail "shard C's $(basename "$f") differs from A's"
done
VISREC_FEATURED=$to "$visrec" reshard --from "$to" --to "$to" >"$work/r6" 2>&1 ||
	fail "reshard to the same list: $(cat "$work/r6")"
has "same list" "nothing to move" "$(cat "$work/r6")"

# From one featured to two: D runs without --shards (one featured, as
# before sharding), E joins with the list of both and D's models.
mkdir -p "$work/few"
for f in $(ls "$work/data/images" | head -60); do cp "$work/data/images/$f" "$work/few/"; done
shard one "$D" -
VISREC_FEATURED=$D "$visrec" ingest "$work/few" >"$work/few.out" 2>&1 || fail "ingest into D: $(cat "$work/few.out")"
flags[two]="--models-from $D"
shard two "$E" "$D,$E"
"$visrec" reshard --from "$D" --to "$D,$E" >"$work/r7" 2>&1 || fail "reshard 1 -> 2: $(cat "$work/r7")"
has "1 -> 2" "moved $(items "$E") items" "$(cat "$work/r7")"
[ "$(items "$E")" -gt 0 ] && [ $(( $(items "$D") + $(items "$E") )) = 60 ] ||
	fail "after 1 -> 2, D holds $(items "$D") and E $(items "$E") of 60"
"$visrec" reshard --from "$D" --to "$D,$E" >"$work/r8" 2>&1 || fail "reshard 1 -> 2 again: $(cat "$work/r8")"
has "1 -> 2 again" "nothing to move" "$(cat "$work/r8")"

[ $failed = 0 ] && echo "reshard: ok"
exit $failed

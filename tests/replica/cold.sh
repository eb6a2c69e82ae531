#!/usr/bin/env bash
# A new item on a read replica, on loopback with real daemons: featured, a
# writer rankd trained on it (VBPR, so items rank by their image) and a
# replica that follows featured's feed too. Images ingested after the
# Train under ids nobody has seen (no interaction names them) must score
# on the replica exactly as on the writer, by their vectors: the replica
# learns such ids from the writer's log (to keep the writer's indices),
# and its own feed may bring the item's change before that, while the id
# is unknown there. It used to leave those items to the next snapshot, so
# the replica scored every new item with the bare prior (one value for
# all) while the writer scored each by its image.
#   tests/replica/cold.sh FEATURED RANKD VISREC
set -uo pipefail
featured=$1
rankd=$2
visrec=$3
. "$(dirname "$0")/../shards/lib.sh"
read -r pf pw pr < <(free_ports 3)
F=127.0.0.1:$pf W=127.0.0.1:$pw P=127.0.0.1:$pr
export VISREC_FEATURED=$F VISREC_RANKD=$W

step datagen
"$visrec" datagen --out "$work/data" --users 40 --items 120 --interactions 800 --image-min 32 \
	--image-max 48 --seed 3 >/dev/null 2>&1 || die "datagen"
mkdir -p "$work/late"
for f in $(ls "$work/data/images" | tail -n 6); do cp "$work/data/images/$f" "$work/late/zz-$f"; done
ls "$work/late" | sed 's/\.jpg$//' >"$work/late.ids"

step "featured and the writer"
start featured "$work/f.out" "$featured" --listen "$F" --data "$work/f"
start writer "$work/w.out" "$rankd" --listen "$W" --data "$work/w" --featured "$F"
"$visrec" ingest "$work/data/images" >/dev/null 2>"$work/e" || die "ingest: $(cat "$work/e")"
"$visrec" import "$work/data/interactions.csv" >/dev/null 2>"$work/e" || die "import: $(cat "$work/e")"
step "train"
trained() { "$visrec" train --model vbpr --epochs 2 --seed 1 >/dev/null 2>"$work/e"; }
wait_for 30 trained || die "train: $(cat "$work/e")"

step "the replica"
start replica "$work/p.out" "$rankd" --listen "$P" --data "$work/p" --featured "$F" --writer "$W"
version() { VISREC_RANKD=$1 "$visrec" --json info 2>/dev/null | python3 -c '
import json, sys; print(json.load(sys.stdin)["rankd"].get("model_version", 0))'; }
serves_writers() { [ "$(version "$P")" = "$(version "$W")" ]; }
wait_for 30 serves_writers || die "the replica does not serve the writer's model: $(version "$P") vs $(version "$W")"

step "new items"
"$visrec" ingest "$work/late" >/dev/null 2>"$work/e" || die "ingest of the new items: $(cat "$work/e")"
user=$(sed -n 2p "$work/data/interactions.csv" | cut -d, -f1)
# scores RANKD: the new items' scores on RANKD, one "id score" a line.
scores() {
	VISREC_RANKD=$1 "$visrec" --json score --user "$user" $(cat "$work/late.ids") 2>/dev/null |
		python3 -c '
import json, sys
for s in json.load(sys.stdin)["items"]: print(s["item_id"], repr(float(s.get("score", 0))))'
}
# The writer scores each new item by its vector: not one value for all.
distinct() { [ "$(scores "$W" | awk '{print $2}' | sort -u | wc -l)" -ge 3 ]; }
wait_for 30 distinct || die "the writer does not score the new items by their images: $(scores "$W")"
same() { [ -n "$(scores "$P")" ] && [ "$(scores "$P")" = "$(scores "$W")" ]; }
wait_for 30 same || fail "the replica scores the new items otherwise than the writer:
writer:
$(scores "$W")
replica:
$(scores "$P")"
# And ranks them as the writer does: Recommend among the new items only.
rec() { VISREC_RANKD=$1 "$visrec" recommend --user "$user" -k 6 --candidates "$(paste -sd, "$work/late.ids")" 2>&1; }
[ "$(rec "$P")" = "$(rec "$W")" ] || fail "Recommend among the new items differs:
writer:
$(rec "$W")
replica:
$(rec "$P")"

step stop
[ "$failed" = 0 ] && echo "replica cold items: ok"
exit "$failed"

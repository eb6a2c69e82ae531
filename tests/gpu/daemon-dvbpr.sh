#!/usr/bin/env bash
# A short real DVBPR training through both daemons: generated data (the
# small data set of run.sh --small), featured and rankd on loopback,
# ingest, import, `visrec train --model dvbpr` for a few hundred steps and
# the validation AUC it reaches, so a device check measures the real path
# (gRPC, rankd's sampler and BPR math, featured's TrainVisual on its
# backend), not a kernel alone. tests/gpu/device-check.sh runs it on the
# GPU machine when a full build is at hand.
#
#   bash tests/gpu/daemon-dvbpr.sh BUILD_DIR [ARCH] [EPOCHS] [TRIPLES_PER_EPOCH]
#
# ARCH alexnet (default; 224 px, 128 triples a step) or small (16 px, 64 a
# step: for a machine without a GPU). featured runs on the backend and
# precision VISREC_BACKEND and VISREC_PRECISION name (its own flags'
# variables; default auto and fp32). Prints the trainer's lines and
#   RESULT daemons dvbpr <arch> <precision> val_auc <v>
#   RESULT daemons dvbpr <arch> <precision> train_s <v>
#   RESULT daemons dvbpr <arch> <precision> steps <v>
# Exit 0 when training ran and reported an AUC in (0, 1]; 1 (with the
# daemons' last log lines) on any failure.
set -euo pipefail

build=${1:?usage: daemon-dvbpr.sh BUILD_DIR [ARCH] [EPOCHS] [TRIPLES_PER_EPOCH]}
arch=${2:-alexnet}
epochs=${3:-3}
tpe=${4:-}
backend=${VISREC_BACKEND:-auto}
precision=${VISREC_PRECISION:-fp32}
case $arch in
alexnet) batch=128 tpe=${tpe:-12800} extra=(--arch alexnet) ;;
small) batch=64 tpe=${tpe:-6400} extra=(--arch small --input-size 16 --visual-dims 16 --cnn-lr 3e-3) ;;
*) echo "daemon-dvbpr.sh: ARCH is alexnet or small" >&2; exit 2 ;;
esac
extra+=(--batch-size "$batch")

featured_bin=$build/featured/featured
rankd_bin=$build/rankd/rankd
visrec_bin=$build/tools/visrec
for b in "$featured_bin" "$rankd_bin" "$visrec_bin"; do
	[ -x "$b" ] || { echo "daemon-dvbpr.sh: FAILED: $b is not built" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/daemon-dvbpr.XXXXXX")
pids=()
stop() {
	local p
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do
		for _ in $(seq 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	pids=()
}
die() {
	echo "daemon-dvbpr.sh: FAILED: $*" >&2
	local l
	for l in "$work/featured.log" "$work/rankd.log"; do
		[ -s "$l" ] && { echo "--- last lines of $l" >&2; tail -n 8 "$l" >&2; }
	done
	exit 1
}
trap 'stop; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# start NAME COMMAND...: runs a daemon, waits for its "listening on" line.
start() {
	local name=$1
	shift
	"$@" >"$work/$name.addr" 2>"$work/$name.log" &
	pids+=($!)
	for _ in $(seq 300); do
		addr=$(sed -n 's/.* listening on //p' "$work/$name.addr")
		[ -n "$addr" ] && return 0
		kill -0 "${pids[-1]}" 2>/dev/null || die "$name exited at start"
		sleep 0.1
	done
	die "$name did not report its address within 30 s"
}

"$visrec_bin" datagen --out "$work/data" --users 300 --items 600 --interactions 6000 --seed 7 \
	>"$work/datagen.log" 2>&1 || { cat "$work/datagen.log" >&2; die "datagen"; }
start featured "$featured_bin" --listen 127.0.0.1:0 --data "$work/featured-data" \
	--backend "$backend" --precision "$precision"
export VISREC_FEATURED=$addr
start rankd "$rankd_bin" --listen 127.0.0.1:0 --data "$work/rankd-data" --featured "$addr"
export VISREC_RANKD=$addr
"$visrec_bin" health --wait 30 >/dev/null || die "health"
echo "featured: $("$visrec_bin" info 2>/dev/null | grep -m1 -i backend || echo '?')"
"$visrec_bin" ingest "$work/data" >/dev/null || die "ingest"
"$visrec_bin" import "$work/data/interactions.csv" >/dev/null || die "import"
t0=$(date +%s.%N)
"$visrec_bin" train --model dvbpr --seed 1 --epochs "$epochs" --triples-per-epoch "$tpe" \
	"${extra[@]}" | tee "$work/train.txt" || die "train"
t1=$(date +%s.%N)
auc=$(sed -n 's/.*best val AUC \([0-9.]*\).*/\1/p' "$work/train.txt" | tail -n 1)
awk -v a="${auc:-x}" 'BEGIN { exit !(a + 0 > 0 && a + 0 <= 1) }' ||
	die "no validation AUC in (0, 1] in the trainer's output"
steps=$(( epochs * ((tpe + batch - 1) / batch) ))
echo "RESULT daemons dvbpr $arch $precision val_auc $auc"
echo "RESULT daemons dvbpr $arch $precision train_s $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')"
echo "RESULT daemons dvbpr $arch $precision steps $steps"

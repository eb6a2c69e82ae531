#!/usr/bin/env bash
# Benchmark of `visrec vectors`: a featured on loopback with ITEMS items of
# DIMS-dim vectors (MobileNetV2 at 96 px, random init, DIMS outputs), then
# REPEAT exports of every item and REPEAT of the same items listed by
# --ids; prints vectors/s and MB/s (matrix bytes, fsync included) per
# run and their medians, and the exporter's peak RSS.
#   tests/clients/bench_vectors.sh BUILD_DIR [ITEMS 5000] [DIMS 2048] [REPEAT 5]
set -euo pipefail
build=$(cd "$1" && pwd) items=${2:-5000} dims=${3:-2048} repeat=${4:-5}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/vr-bench-vectors-XXXXXX)
. "$here/daemons.sh"
trap 'stop_daemons; rm -rf "$work"' EXIT
visrec=$build/tools/visrec
"$visrec" datagen --out "$work/data" --users 100 --items "$items" --interactions "$items" \
	--image-min 32 --image-max 64 >/dev/null 2>&1
start_daemon featured "$build/featured/featured" --listen 127.0.0.1:0 --data "$work/fd" \
	--arch mobilenet_v2 --init-seed 1 --input-size 96 --num-outputs "$dims"
export VISREC_FEATURED=$addr
"$visrec" ingest "$work/data" 2>/dev/null | tail -n 1
run() { # label, then the arguments of visrec vectors
	local label=$1; shift
	local secs=()
	for _ in $(seq "$repeat"); do
		/usr/bin/time -f '%M' -o "$work/rss" "$visrec" --json vectors "$@" >"$work/out.json"
		s=$(sed -n 's/.*"seconds":\([0-9.e-]*\).*/\1/p' "$work/out.json")
		n=$(sed -n 's/.*"items":\([0-9]*\).*/\1/p' "$work/out.json")
		d=$(sed -n 's/.*"dims":\([0-9]*\).*/\1/p' "$work/out.json")
		secs+=("$s")
		awk -v s="$s" -v n="$n" -v d="$d" -v r="$(cat "$work/rss")" -v l="$label" \
			'BEGIN { printf "%s: %d x %d in %.3f s: %.0f vectors/s, %.1f MB/s, peak RSS %.1f MB\n", l, n, d, s, n / s, n * d * 4 / s / 1e6, r / 1024 }'
	done
	printf '%s\n' "${secs[@]}" | sort -g | awk -v n="$n" -v d="$d" -v l="$label" \
		'{ a[NR] = $1 } END { m = a[int((NR + 1) / 2)]; printf "%s: median %.3f s: %.0f vectors/s, %.1f MB/s\n", l, m, n / m, n * d * 4 / m / 1e6 }'
}
run all "$work/all.npy"
run listed "$work/listed.npy" --ids "$work/all.ids.txt"

#!/bin/sh
# Ingest benchmark: the featured daemon over gRPC (bench_featured) beside
# torchvision's AlexNet with its DataLoader (torch_peer.py), on the same
# JPEGs of 500x375 and the same 2 cores, alternated per layer (A B A B),
# then CNN-F (ours only: torchvision has none), PyTorch once more with its
# stock malloc, and the medians. First, when the build has it, gpu's
# bench_nn: the same nets alone and OpenBLAS's sgemm rate, the ceiling the
# network's share is stated against.
#
#   tests/bench_featured/run.sh BUILD_DIR [N_IMAGES] [REPS]   (1000, 1)
#
# The JPEGs go to $VR_BENCH_DIR (default /dev/shm/visrec-bench-featured),
# removed at the end unless VR_BENCH_KEEP=1; featured's data directories go
# to /tmp (a real disk: its commits are fsynced) and are removed by
# bench_featured. PyTorch runs at its best per docs/measuring.md: 2 threads
# (set in torch_peer.py), 1 DataLoader worker (0 halves its rate, 2 add
# nothing on 2 cores), OpenBLAS, jemalloc preloaded.
set -eu
build=${1:?usage: run.sh BUILD_DIR [N_IMAGES] [REPS]}
n=${2:-1000}
reps=${3:-1}
here=$(cd "$(dirname "$0")" && pwd)
dir=${VR_BENCH_DIR:-/dev/shm/visrec-bench-featured}
log=$(mktemp)
jemalloc=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
bench="$build/tests/bench_featured/bench_featured"
trap '[ "${VR_BENCH_KEEP:-0}" = 1 ] || rm -rf "$dir"; rm -f "$log"' EXIT

rm -rf "$dir"
"$bench" --make "$n" "$dir"
if [ -x "$build/tests/gpu/bench_nn" ]; then
	echo "== the network library alone, and OpenBLAS's sgemm (gpu's bench_nn)"
	"$build/tests/gpu/bench_nn" -g -a alexnet,cnnf -b 16 -i 3
fi
for rep in $(seq "$reps"); do
	for layer in fc7 output; do
		echo "== rep $rep: visrec alexnet $layer"
		"$bench" "$dir" --arch alexnet --layer "$layer" | tee -a "$log"
		echo "== rep $rep: pytorch alexnet $layer (jemalloc)"
		LD_PRELOAD=$jemalloc MALLOC_CONF=oversize_threshold:0,dirty_decay_ms:-1,muzzy_decay_ms:-1 \
			/usr/bin/python3 "$here/torch_peer.py" "$dir" --layer "$layer" | tee -a "$log"
	done
	for layer in fc7 output; do
		echo "== rep $rep: visrec cnnf $layer"
		"$bench" "$dir" --arch cnnf --layer "$layer" | tee -a "$log"
	done
done
echo "== pytorch alexnet fc7 (stock malloc)"
/usr/bin/python3 "$here/torch_peer.py" "$dir" --layer fc7 | tee -a "$log"

echo "== medians over $reps runs (stock PyTorch: 1 run)"
/usr/bin/python3 - "$log" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line)
        name = r["impl"] + ("" if r["impl"] == "visrec" else " jemalloc" if r["jemalloc"] else " stock")
        rows.setdefault((r["arch"], r["layer"], name), []).append(r)
for key in sorted(rows):
    runs = rows[key]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]
           if isinstance(runs[0][k], (int, float)) and not isinstance(runs[0][k], bool)}
    print(f"{key[0]:>8} {key[1]:<7} {key[2]:<17} " + "  ".join(f"{k}={v:g}" for k, v in med.items()))
PY

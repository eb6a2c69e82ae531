#!/bin/sh
# Serving benchmark: bench_serve (ours) and torch_peer.py (PyTorch) on the
# same matrices, alternated (A B A B) over 10,000 and 1,000,000 items, then
# PyTorch once more without jemalloc (the stock figure), then medians.
#
#   tests/bench_serve/run.sh BUILD_DIR [REPS]      (REPS defaults to 2)
#
# The matrices go to $VR_BENCH_DIR (default /dev/shm/visrec-bench-serve,
# 1.9 GB), removed at the end unless VR_BENCH_KEEP=1. PyTorch runs at its
# best per docs/measuring.md: 2 threads (set by the script), OpenBLAS,
# jemalloc preloaded.
set -eu
build=${1:?usage: run.sh BUILD_DIR [REPS]}
reps=${2:-2}
here=$(cd "$(dirname "$0")" && pwd)
dir=${VR_BENCH_DIR:-/dev/shm/visrec-bench-serve}
log=$(mktemp)
jemalloc=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
[ -e "$jemalloc" ] || echo "note: $jemalloc is missing (deploy/install-deps.sh --test installs libjemalloc2); PyTorch runs with the stock allocator and says so" >&2
mkdir -p "$dir"
trap '[ "${VR_BENCH_KEEP:-0}" = 1 ] || rm -rf "$dir"; rm -f "$log"' EXIT

for rep in $(seq "$reps"); do
	for n in 10000 1000000; do
		echo "== rep $rep, $n items: visrec"
		"$build/tests/bench_serve/bench_serve" "$n" --dump "$dir" | tee -a "$log"
		echo "== rep $rep, $n items: pytorch (jemalloc)"
		LD_PRELOAD=$jemalloc MALLOC_CONF=oversize_threshold:0,dirty_decay_ms:-1,muzzy_decay_ms:-1 \
			/usr/bin/python3 "$here/torch_peer.py" "$n" "$dir" | tee -a "$log"
	done
done
for n in 10000 1000000; do
	echo "== $n items: pytorch (stock malloc)"
	/usr/bin/python3 "$here/torch_peer.py" "$n" "$dir" | tee -a "$log"
done

echo "== medians over $reps runs (stock PyTorch: 1 run)"
/usr/bin/python3 - "$log" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line)
        key = (r["items"], r["impl"], r.get("jemalloc", ""))
        rows.setdefault(key, []).append(r)
for key in sorted(rows):
    runs = rows[key]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0] if isinstance(runs[0][k], (int, float))
           and not isinstance(runs[0][k], bool) and k != "items"}
    name = key[1] + ("" if key[1] == "visrec" else " jemalloc" if key[2] else " stock")
    print(f"{key[0]:>8} items  {name:<17} " + "  ".join(f"{k}={v:g}" for k, v in med.items()))
PY

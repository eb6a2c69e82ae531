#!/bin/sh
# The training benchmark of issue 4: rankd's trainer (bench_train) beside
# the same VBPR step in PyTorch (vbpr_torch.py), alternated A B A B so that
# both see the same machine load, then the other figures once each.
#
#   tests/bench_train/run_bench.sh BUILD_DIR [SECONDS] [ROUNDS]
#
# BUILD_DIR holds tests/bench_train/bench_train (make bench_train).
# SECONDS per timed program (default 6), ROUNDS of the A B pair (default 2).
# PyTorch runs at its best: 2 threads, jemalloc preloaded with the settings
# of docs/measuring.md; its stock figure (glibc malloc) is printed too.
set -eu
build=${1:?usage: run_bench.sh BUILD_DIR [SECONDS] [ROUNDS]}
secs=${2:-6}
rounds=${3:-2}
here=$(cd "$(dirname "$0")" && pwd)
bench="$build/tests/bench_train/bench_train"
py=/usr/bin/python3
jemalloc=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
jeconf=oversize_threshold:0,dirty_decay_ms:-1,muzzy_decay_ms:-1
out=$(mktemp)
one=$(mktemp)
trap 'rm -f "$out" "$one"' EXIT

run() { # label command...
	label=$1
	shift
	echo "== $label: $*"
	"$@" >"$one"
	cat "$one"
	sed -n "s/.*median triples_per_s=\([0-9]*\).*/$label \1/p" "$one" >>"$out"
}

for r in $(seq "$rounds"); do
	run "A_vbpr_c_2t" "$bench" vbpr --threads 2 --batch 42000 --seconds "$secs"
	run "B_vbpr_torch_jemalloc" env LD_PRELOAD="$jemalloc" MALLOC_CONF="$jeconf" \
		"$py" "$here/vbpr_torch.py" --threads 2 --batch 42000 --seconds "$secs"
done
run "vbpr_torch_stock" "$py" "$here/vbpr_torch.py" --threads 2 --batch 42000 --seconds "$secs"
run "vbpr_c_1t" "$bench" vbpr --threads 1 --batch 42000 --seconds "$secs"
run "vbpr_c_2t_items" "$bench" vbpr --threads 2 --batch 42000 --seconds "$secs" --path items
run "vbpr_hogwild_1t" "$bench" vbpr-hog --threads 1 --seconds "$secs"
run "vbpr_hogwild_2t" "$bench" vbpr-hog --threads 2 --seconds "$secs"
run "bpr_hogwild_1t" "$bench" bpr --threads 1 --seconds "$secs"
run "bpr_hogwild_2t" "$bench" bpr --threads 2 --seconds "$secs"
run "bpr_minibatch_2t" "$bench" bpr-mb --threads 2 --batch 42000 --seconds "$secs"

echo "== summary (medians of the timed runs, triples/s)"
awk '{ v[$1] = v[$1] " " $2 } END { for (k in v) print k ":" v[k] }' "$out" | sort
awk '
	/^A_vbpr_c_2t / { a[na++] = $2 }
	/^B_vbpr_torch_jemalloc / { b[nb++] = $2 }
	END {
		n = na < nb ? na : nb
		for (i = 0; i < n; i++) { r[i] = a[i] / b[i]; printf "round %d: C/torch = %.2f\n", i + 1, r[i] }
		# median of the per-round ratios
		for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (r[j] < r[i]) { t = r[i]; r[i] = r[j]; r[j] = t }
		if (n) printf "median ratio C/torch(jemalloc) at batch 42,000: %.2f\n", n % 2 ? r[int(n / 2)] : (r[n / 2 - 1] + r[n / 2]) / 2
	}' "$out"

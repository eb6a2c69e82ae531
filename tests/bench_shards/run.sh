#!/usr/bin/env bash
# Scale-out benchmark (issue 16's "Measure"), on loopback with real daemons:
#  1. ingest: `visrec ingest` of datagen's JPEGs into 1 featured (pinned to
#     core 0 with taskset) and into 2 featured shards (core 0 and core 1),
#     fresh data directories every run, alternated 1 2 1 2 ..., images/s
#     from the CLI's wall time (start to exit), medians and their ratio.
#     featured runs its default net (small: random, 64 px in, 50 outputs);
#     VR_BENCH_ARCH=alexnet (say) runs another, at its fc7 layer.
#  2. Recommend QPS with 1 and 2 rankd read replicas, each pinned to one
#     core, the callers spread over the replicas (bench_rank_rpc --replicas:
#     10 k items, VBPR K=200 K'=100 F=2048, top-k cache off so that every
#     call scans), alternated 1 2 1 2 ..., medians and their ratio. The
#     callers run on the same cores: on a 2-core machine they take from the
#     replicas what they use.
#  3. replica lag after AddInteractions (p50, p99 over VR_BENCH_LAG
#     samples, 200: the writer's answer until the replica no longer ranks
#     the item first; measured idle, with 1 replica) and the time a replica
#     takes from its start to serve the writer's 10 k-item VBPR model
#     (median of every replica started).
#  4. resharding rate: after the last 2-shard ingest a third shard joins
#     (--models-from) and `visrec reshard --from A,B --to A,B,C --batch 64`
#     runs; items moved per second (the CLI's start included), the space
#     the sources use before and after (du: blocks, so LMDB's sparse map
#     does not count) and the new shard's.
# Prints key=value lines and a short table at the end.
#
#   tests/bench_shards/run.sh BUILD_DIR [REPS]   (REPS 3; VR_BENCH_IMAGES 1000)
set -uo pipefail
build=$(cd "${1:?usage: run.sh BUILD_DIR [REPS]}" && pwd)
reps=${2:-3}
n=${VR_BENCH_IMAGES:-1000}
lag=${VR_BENCH_LAG:-200}
featured=$build/featured/featured
visrec=$build/tools/visrec
bench=$build/tests/bench_rank_rpc/bench_rank_rpc
for b in "$featured" "$visrec" "$bench"; do
	[ -x "$b" ] || { echo "run.sh: $b is not built" >&2; exit 1; }
done
command -v taskset >/dev/null || { echo "run.sh: taskset (util-linux) is missing" >&2; exit 1; }
command -v python3 >/dev/null || { echo "run.sh: python3 (free ports, medians) is missing" >&2; exit 1; }
cores=$(nproc --all)
[ "$cores" -ge 2 ] || { echo "run.sh: needs 2 cores, this machine has $cores" >&2; exit 1; }
work=$(mktemp -d /tmp/visrec-bench-shards.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
	rm -rf "$work"
}
trap cleanup EXIT
arch_flags=()
[ -n "${VR_BENCH_ARCH:-}" ] && arch_flags=(--arch "$VR_BENCH_ARCH" --feature-layer fc7)

free_ports() {
	python3 -c '
import socket, sys
s = [socket.socket() for _ in range(int(sys.argv[1]))]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])' "$1"
}
# shard NAME CORE ADDR [flags...]: a featured pinned to CORE, waits for it
# (its pid appended to pids).
shard() {
	local name=$1 core=$2 addr=$3; shift 3
	taskset -c "$core" "$featured" --listen "$addr" --data "$work/$name" "${arch_flags[@]}" "$@" \
		>"$work/$name.out" 2>"$work/$name.err" &
	pids+=($!)
	for _ in $(seq 600); do
		grep -q "listening on" "$work/$name.out" && return 0
		kill -0 $! 2>/dev/null || { cat "$work/$name.err" >&2; echo "run.sh: featured $name exited" >&2; exit 1; }
		sleep 0.1
	done
	echo "run.sh: featured $name did not start" >&2
	exit 1
}
stop_all() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
	pids=()
}
# ingest KEY LIST: prints KEY=the CLI's wall time in seconds (the stored
# count checked).
ingest() {
	local t0 t1
	t0=$(date +%s.%N)
	"$visrec" --featured "$2" ingest "$work/data" >"$work/ingest.out" 2>"$work/ingest.err" ||
		{ cat "$work/ingest.out" "$work/ingest.err" >&2; echo "run.sh: ingest into $2 failed" >&2; exit 1; }
	t1=$(date +%s.%N)
	grep -q "$n stored, 0 rejected" "$work/ingest.out" ||
		{ cat "$work/ingest.out" >&2; echo "run.sh: ingest did not store $n images" >&2; exit 1; }
	echo "$1=$(python3 -c "print(f'{$t1 - $t0:.3f}')")"
}

echo "load_before=$(cut -d' ' -f1-3 /proc/loadavg)"
echo "cores=$cores arch=${VR_BENCH_ARCH:-small} images=$n reps=$reps"
"$visrec" datagen --out "$work/data" --users 50 --items "$n" --interactions $((n * 3)) --seed 3 \
	>/dev/null 2>"$work/datagen.err" || { cat "$work/datagen.err" >&2; exit 1; }
echo "images_bytes=$(du -sb "$work/data/images" | cut -f1)"

# 1. ingest, and (4.) after the last 2-shard run, the reshard to 3 shards.
for rep in $(seq "$reps"); do
	read -r p1 p2 p3 < <(free_ports 3)
	A=127.0.0.1:$p1 B=127.0.0.1:$p2 C=127.0.0.1:$p3
	rm -rf "$work"/s1 "$work"/a "$work"/b "$work"/c
	shard s1 0 "$A"
	ingest ingest_1shard_s "$A"
	stop_all
	shard a 0 "$A" --shards "$A,$B" --shard-self "$A"
	shard b 1 "$B" --shards "$A,$B" --shard-self "$B"
	ingest ingest_2shard_s "$A,$B"
	if [ "$rep" = "$reps" ]; then
		# Space in use (blocks, not the LMDB files' apparent size).
		before=$(du -sk "$work/a" "$work/b" | awk '{ s += $1 } END { print s }')
		shard c 1 "$C" --shards "$A,$B,$C" --shard-self "$C" --models-from "$A"
		t0=$(date +%s.%N)
		"$visrec" reshard --from "$A,$B" --to "$A,$B,$C" --batch 64 >"$work/reshard.out" 2>&1 ||
			{ cat "$work/reshard.out" >&2; echo "run.sh: reshard failed" >&2; exit 1; }
		t1=$(date +%s.%N)
		moved=$(sed -n 's/^moved \([0-9]*\) items.*/\1/p' "$work/reshard.out")
		after=$(du -sk "$work/a" "$work/b" | awk '{ s += $1 } END { print s }')
		new=$(du -sk "$work/c" | cut -f1)
		echo "reshard_moved=${moved:-0}"
		echo "reshard_s=$(python3 -c "print(f'{$t1 - $t0:.3f}')")"
		echo "reshard_sources_kb_before=$before"
		echo "reshard_sources_kb_after=$after"
		echo "reshard_new_shard_kb=$new"
	fi
	stop_all
done >"$work/ingest.kv"
cat "$work/ingest.kv"

# 2. and 3. the replicas.
for rep in $(seq "$reps"); do
	lagopt=()
	[ "$rep" = 1 ] && lagopt=(--lag-samples "$lag")
	"$bench" --replicas 1,2 --levels 16 --seconds 3 --topk-cache-mb 0 --dir "$work/rank" "${lagopt[@]}" \
		2>"$work/bench.err" | grep '=' || { cat "$work/bench.err" >&2; echo "run.sh: bench_rank_rpc failed" >&2; exit 1; }
done >"$work/rank.kv"
cat "$work/rank.kv"
echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$work/ingest.kv" "$work/rank.kv" "$n" <<'PY'
import re, statistics, sys
kv = {}
for path in sys.argv[1:3]:
    for line in open(path):
        for k, v in re.findall(r"(\w+)=(\S+)", line):
            kv.setdefault(k, []).append(v)
n = int(sys.argv[3])
med = lambda k: statistics.median(float(v) for v in kv[k])
i1, i2 = n / med("ingest_1shard_s"), n / med("ingest_2shard_s")
# bench_rank_rpc's lines: "replicas=N conc=.. qps=.." (the load lines carry replica_load_s)
q = {}
for path in sys.argv[2:3]:
    for line in open(path):
        m = re.match(r"replicas=(\d+) conc=\d+ .*qps=(\d+)", line)
        if m:
            q.setdefault(int(m[1]), []).append(float(m[2]))
q1, q2 = statistics.median(q[1]), statistics.median(q[2])
out = {
    "ingest_1shard_img_s": f"{i1:.1f}", "ingest_2shard_img_s": f"{i2:.1f}", "ingest_ratio": f"{i2 / i1:.2f}",
    "recommend_1replica_qps": f"{q1:.0f}", "recommend_2replica_qps": f"{q2:.0f}",
    "recommend_ratio": f"{q2 / q1:.2f}",
    "replica_lag_p50_ms": kv["replica_lag_p50_ms"][0], "replica_lag_p99_ms": kv["replica_lag_p99_ms"][0],
    "replica_load_10k_vbpr_s": f"{med('replica_load_s'):.2f}",
}
moved, secs = int(kv["reshard_moved"][0]), float(kv["reshard_s"][0])
b0, b1 = int(kv["reshard_sources_kb_before"][0]), int(kv["reshard_sources_kb_after"][0])
bn = int(kv["reshard_new_shard_kb"][0])
out.update({"reshard_items_s": f"{moved / secs:.0f}" if secs > 0 else "0",
            "reshard_sources_growth_pct": f"{100.0 * (b1 - b0) / b0:.1f}"})
for k, v in out.items():
    print(f"{k}={v}")
print()
print(f"{'measure':<34} {'1':>10} {'2':>10} {'ratio':>7}  goal")
print(f"{'ingest images/s (1 vs 2 shards)':<34} {i1:10.1f} {i2:10.1f} {i2 / i1:7.2f}  >= 1.8")
print(f"{'Recommend QPS (1 vs 2 replicas)':<34} {q1:10.0f} {q2:10.0f} {q2 / q1:7.2f}  >= 1.8")
print(f"replica lag p50 {out['replica_lag_p50_ms']} ms, p99 {out['replica_lag_p99_ms']} ms "
      f"({kv['replica_lag_samples'][0]} samples); replica load of a 10k-item VBPR model "
      f"{out['replica_load_10k_vbpr_s']} s (median of {len(kv['replica_load_s'])})")
print(f"reshard 2 -> 3 shards: {moved} items in {secs:.2f} s ({out['reshard_items_s']} items/s, the CLI's "
      f"start included); the sources' data {b0} -> {b1} KiB ({out['reshard_sources_growth_pct']}%), "
      f"the new shard {bn} KiB")
PY

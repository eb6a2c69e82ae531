#!/usr/bin/env bash
# A benchmark (not a test): DVBPR's Train time on one featured against two
# shards holding the same data (featured.proto, "DVBPR across shards"),
# each setup with its own rankd, runs alternated, the median of each
# printed with the ratio. run.sh --small's data set and DVBPR settings,
# more triples per epoch so the steps weigh as in a real run.
#   tests/shards/bench_dvbpr.sh FEATURED RANKD VISREC [RUNS] [TRIPLES]
set -uo pipefail
featured=$1
rankd=$2
visrec=$3
runs=${4:-3}
triples=${5:-6400}
export VISREC_SHARD_TEST_BUDGET=${VISREC_SHARD_TEST_BUDGET:-1800}
. "$(dirname "$0")/lib.sh"
read -r p1 p2 p3 p4 p5 < <(free_ports 5)
S=127.0.0.1:$p1 R1=127.0.0.1:$p2 A=127.0.0.1:$p3 B=127.0.0.1:$p4 R2=127.0.0.1:$p5
list="$A,$B"
"$visrec" datagen --out "$work/data" --users 300 --items 600 --interactions 6000 --seed 7 \
	>/dev/null 2>&1 || die "datagen"
start "featured $S" "$work/s.out" "$featured" --listen "$S" --data "$work/s"
for a in "$A" "$B"; do
	start "shard $a" "$work/f-$a.out" "$featured" --listen "$a" --data "$work/f-$a" --shards "$list" \
		--shard-self "$a"
done
start "rankd 1" "$work/r1.out" "$rankd" --listen "$R1" --data "$work/r1" --featured "$S"
start "rankd 2" "$work/r2.out" "$rankd" --listen "$R2" --data "$work/r2" --featured "$list"
one=(--featured "$S" --rankd "$R1")
two=(--featured "$list" --rankd "$R2")
for s in one two; do
	declare -n o=$s
	"$visrec" "${o[@]}" import "$work/data/interactions.csv" >/dev/null 2>"$work/e" || die "import: $(cat "$work/e")"
	"$visrec" "${o[@]}" ingest --batch 16 "$work/data" >/dev/null 2>"$work/e" || die "ingest: $(cat "$work/e")"
done
train=(train --model dvbpr --epochs 2 --arch small --input-size 16 --batch-size 64 --visual-dims 16
	--cnn-lr 3e-3 --triples-per-epoch "$triples" --seed 5)
echo "load before: $(uptime)"
t_one=() t_two=()
for i in $(seq "$runs"); do
	for s in one two; do
		declare -n o=$s
		t0=$(date +%s.%N)
		"$visrec" "${o[@]}" "${train[@]}" >/dev/null 2>"$work/e" || die "train ($s): $(cat "$work/e")"
		t1=$(date +%s.%N)
		t=$(python3 -c "print('%.2f' % ($t1 - $t0))")
		echo "run $i, $s featured: $t s"
		if [ $s = one ]; then t_one+=("$t"); else t_two+=("$t"); fi
	done
done
echo "load after: $(uptime)"
python3 - "${t_one[*]}" "${t_two[*]}" <<'PY'
import statistics, sys
a = [float(x) for x in sys.argv[1].split()]
b = [float(x) for x in sys.argv[2].split()]
ma, mb = statistics.median(a), statistics.median(b)
print("DVBPR Train, 600 items: 1 featured %.2f s, 2 shards %.2f s (median of %d), 2/1 = %.2f"
      % (ma, mb, len(a), mb / ma))
PY
grep -h "other shards adopted" "$work/r2.out.err" | tail -n 1

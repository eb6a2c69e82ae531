#!/usr/bin/env bash
# Fuzzes visrec's input paths with libFuzzer: builds the harnesses of
# tests/fuzz with clang (libFuzzer, ASan and UBSan over all of our code)
# into their own build folder, runs each for SECONDS, one after the other,
# on its committed seeds plus what earlier runs found, and prints a table:
# harness, executions, executions per second, crashes, new corpus entries.
#
#   tests/fuzz/run.sh [options] SECONDS [HARNESS...]     (default: every harness)
#     --build DIR   the fuzz build (default: build-fuzz at the top of the tree)
#     --no-build    use the harnesses already built there
#     --work DIR    new corpus entries, crash inputs and logs (default: DIR/work)
#     --jobs N      build jobs (default: the number of CPUs)
#   Long runs on a shared machine: nice -n 10 tests/fuzz/run.sh 600
#
# Exit status: 0 when no harness crashed, 1 when one did (or could not
# run), 2 for bad usage. A crash leaves its input in
# WORK/artifacts/HARNESS/ (crash-*, leak-*, timeout-*, oom-*): replay it
# with BUILD/tests/fuzz/HARNESS FILE, and once fixed add it to
# tests/fuzz/corpus/HARNESS/ beside a regression test. Every harness runs
# even after one crashed, so one run reports them all.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$root/build-fuzz
work=
do_build=1
jobs=$(nproc)

usage() {
	sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}
while [ $# -gt 0 ]; do
	case $1 in
	--build) build=$2; shift 2 ;;
	--no-build) do_build=0; shift ;;
	--work) work=$2; shift 2 ;;
	--jobs) jobs=$2; shift 2 ;;
	-h|--help) usage ;;
	-*) echo "run.sh: unknown option $1" >&2; usage ;;
	*) break ;;
	esac
done
[ $# -ge 1 ] || usage
secs=$1
shift
case $secs in ''|*[!0-9]*) echo "run.sh: SECONDS must be a whole number, not \"$secs\"" >&2; exit 2 ;; esac
work=${work:-$build/work}

harnesses=("$@")
if [ ${#harnesses[@]} -eq 0 ]; then
	for src in "$root"/tests/fuzz/fuzz_*.c; do
		harnesses+=("$(basename "$src" .c)")
	done
fi

if [ "$do_build" = 1 ]; then
	clang=$(command -v clang || command -v clang-14) || {
		echo "run.sh: clang not found; deploy/install-deps.sh --test installs it" >&2
		exit 1
	}
	cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER="$clang" -DVISREC_FUZZ=ON \
		-DVISREC_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null || exit 1
	cmake --build "$build" --target fuzz -j"$jobs" >/dev/null || {
		echo "run.sh: building the harnesses failed; see: cmake --build $build --target fuzz" >&2
		exit 1
	}
fi

# Leaks are crashes too; UBSan stops at the first report (the build has
# -fno-sanitize-recover), which libFuzzer records as a crash.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}

stat() { sed -n "s/^stat::$1: *//p" "$2" | tail -1; }
artifacts() { find "$1" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l; }

failed=0
rows=()
total_execs=0
for h in "${harnesses[@]}"; do
	bin=$build/tests/fuzz/$h
	seeds=$root/tests/fuzz/corpus/$h
	if [ ! -x "$bin" ] || [ ! -d "$seeds" ]; then
		echo "run.sh: no harness $h (looked for $bin and $seeds)" >&2
		failed=1
		rows+=("$h - - - -")
		continue
	fi
	mkdir -p "$work/corpus/$h" "$work/artifacts/$h" "$work/logs"
	log=$work/logs/$h.log
	dict=()
	[ -f "$root/tests/fuzz/$h.dict" ] && dict=(-dict="$root/tests/fuzz/$h.dict")
	before=$(artifacts "$work/artifacts/$h")
	"$bin" -max_total_time="$secs" -print_final_stats=1 -timeout=30 -rss_limit_mb=2560 \
		-artifact_prefix="$work/artifacts/$h/" "${dict[@]}" \
		"$work/corpus/$h" "$seeds" >"$log" 2>&1
	rc=$?
	crashes=$(( $(artifacts "$work/artifacts/$h") - before ))
	if [ $rc -ne 0 ] && [ "$crashes" -eq 0 ]; then
		crashes=1 # it died without leaving an input (e.g. killed)
	fi
	execs=$(stat number_of_executed_units "$log")
	rate=$(stat average_exec_per_sec "$log")
	new=$(stat new_units_added "$log")
	rows+=("$h ${execs:--} ${rate:--} $crashes ${new:--}")
	total_execs=$(( total_execs + ${execs:-0} ))
	if [ "$crashes" -ne 0 ]; then
		failed=1
		echo "== $h crashed (exit $rc); the end of $log:" >&2
		tail -n 40 "$log" >&2
	fi
done

printf '%-24s %14s %10s %8s %12s\n' harness executions execs/s crashes new_entries
for r in "${rows[@]}"; do
	# shellcheck disable=SC2086
	printf '%-24s %14s %10s %8s %12s\n' $r
done
printf '%-24s %14s\n' total "$total_execs"
exit $failed

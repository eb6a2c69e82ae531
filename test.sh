#!/usr/bin/env bash
# The test command (README, .ci/run): installs what is missing, builds
# visrec twice — the normal build (with the CUDA backend where a toolkit is
# found) and an ASan + UBSan build — and runs the suite under ctest: the unit
# tests under the sanitizers, then everything (unit, integration with real
# daemons, interop, end to end) in the normal build.
#   ./test.sh                 everything
#   ./test.sh -R REGEX        only tests matching REGEX (both builds)
# A skipped test shows as skipped, never as passed, and is listed at the end
# of each run with the reason it gave.
set -euo pipefail
cd "$(dirname "$0")"
root=$PWD
jobs=$(nproc)

deploy/install-deps.sh --test
# The pretrained MobileNetV2 (npm nsfwjs) as our safetensors, and the
# TensorFlow.js reference outputs the weights test compares with.
tools/weights/install.sh --quiet >/dev/null
if [ ! -d tests/interop/node_modules ]; then
	(cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DVISREC_SANITIZE=ON -DVISREC_CUDA=OFF >/dev/null
cmake --build build-asan -j"$jobs"

# Runs ctest in build dir $1 with the other arguments, then lists the tests
# it skipped with each one's reason (its "skipped: ..." line): ctest itself
# says only that they skipped.
run_ctest() {
	local dir=$1 rc=0
	shift
	(cd "$dir" && ctest "$@") | tee "$dir/ctest.out" || rc=$?
	local skipped
	skipped=$(sed -n 's/^[[:space:]]*[0-9]* - \(.*\) (Skipped)$/\1/p' "$dir/ctest.out")
	if [ -n "$skipped" ]; then
		echo "Skipped, and why:"
		awk -v names="$skipped" '
			BEGIN { n = split(names, list, "\n"); for (i = 1; i <= n; i++) want[list[i]] = 1 }
			/^[0-9]+\/[0-9]+ Test: / { name = $3; why = "" }
			{ at = index(tolower($0), "skipped: "); if (at) why = substr($0, at + 9) }
			/^<end of output>$/ { if (name in want) { print "  " name ": " (why != "" ? why : "(no reason given)"); delete want[name] } }
		' "$dir/Testing/Temporary/LastTest.log"
	fi
	return $rc
}

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1
echo "== unit tests under ASan + UBSan"
run_ctest build-asan -L unit --output-on-failure -j"$jobs" "$@"
echo "== the whole suite"
run_ctest build --output-on-failure -j"$jobs" "$@"

#!/usr/bin/env bash
# The test command (README, .ci/run): installs what is missing, builds
# visrec twice — the normal build (with the CUDA backend where a toolkit is
# found) and an ASan + UBSan build — and runs the suite under ctest: the unit
# tests under the sanitizers, then everything (unit, integration with real
# daemons, interop, end to end) in the normal build.
#   ./test.sh                 everything
#   ./test.sh -R REGEX        only tests matching REGEX (both builds)
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

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1
echo "== unit tests under ASan + UBSan"
(cd build-asan && ctest -L unit --output-on-failure -j"$jobs" "$@")
echo "== the whole suite"
(cd build && ctest --output-on-failure -j"$jobs" "$@")

#!/usr/bin/env bash
# The main job (README): installs what is missing, builds, starts featured
# and rankd on loopback with data under out/, shows both healthy, and stops
# them cleanly.
set -euo pipefail
cd "$(dirname "$0")"
jobs=$(nproc)

deploy/install-deps.sh
if [ ! -d tests/interop/node_modules ]; then
	(cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)
fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"

mkdir -p out
pids=()
stop() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait; }
trap stop EXIT

# Starts a daemon on a free port; sets $addr from its "listening on" line.
start() {
	local name=$1; shift
	local log=out/$name.log
	"$@" >"out/$name.addr" 2>"$log" &
	pids+=($!)
	for _ in $(seq 100); do
		addr=$(sed -n 's/.* listening on //p' "out/$name.addr")
		[ -n "$addr" ] && return 0
		kill -0 "${pids[-1]}" 2>/dev/null || { cat "$log" >&2; exit 1; }
		sleep 0.1
	done
	echo "$name did not start; see $log" >&2; exit 1
}
start featured build/featured/featured --listen 127.0.0.1:0 --data out/featured-data
fd=$addr
start rankd build/rankd/rankd --listen 127.0.0.1:0 --data out/rankd-data --featured "$fd"
rk=$addr
node tests/interop/health.js "$fd" "$rk"

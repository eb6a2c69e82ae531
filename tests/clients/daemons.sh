# shellcheck shell=bash
# Sourced by the tests of tests/clients: starts featured (and rankd) on free
# loopback ports with data under $work, and stops them at exit.
#   start_daemon NAME BINARY ARGS...   sets $addr; logs in $work/NAME.log
# The caller sets $work and calls stop_daemons from its EXIT trap.
pids=()

start_daemon() {
	local name=$1; shift
	: >"$work/$name.addr"
	"$@" >>"$work/$name.addr" 2>"$work/$name.log" &
	pids+=($!)
	for _ in $(seq 300); do
		addr=$(sed -n 's/.* listening on //p' "$work/$name.addr")
		[ -n "$addr" ] && return 0
		if ! kill -0 "${pids[-1]}" 2>/dev/null; then
			echo "FAIL: $name exited at start:" >&2
			tail -n 20 "$work/$name.log" >&2
			exit 1
		fi
		sleep 0.1
	done
	echo "FAIL: $name did not report its address within 30 s" >&2
	exit 1
}

# Stops the daemons this test started (by their pids), TERM then KILL.
stop_daemons() {
	[ ${#pids[@]} -gt 0 ] || return 0
	kill -TERM "${pids[@]}" 2>/dev/null || true
	for _ in $(seq 100); do
		kill -0 "${pids[@]}" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "${pids[@]}" 2>/dev/null || true
}

# The first python3 that imports all of the given modules (PATH's, then
# Debian's, whose python3-* packages install for it; VISREC_TEST_PYTHONS,
# a space-separated list, replaces those two); empty if none.
find_python() {
	local py imports
	imports=$(IFS=,; echo "$*")
	for py in ${VISREC_TEST_PYTHONS:-python3 /usr/bin/python3}; do
		if command -v "$py" >/dev/null 2>&1 && "$py" -c "import $imports" 2>/dev/null; then
			echo "$py"
			return 0
		fi
	done
}

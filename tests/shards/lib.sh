# What the shard tests share, sourced after their arguments are read: a
# work folder removed at exit together with every daemon whose pid the
# test added to pids, fail/die/has, and free loopback ports (free_ports N
# prints N; a shard's address is in the list every party holds, so it
# cannot be port 0). python3 picks the ports: without it the test skips.
work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do
		for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$p" 2>/dev/null
	done
	rm -rf "$work"
}
trap cleanup EXIT
failed=0
fail() { echo "FAIL: $*" >&2; failed=1; }
die() { echo "FAIL: $*" >&2; exit 1; }
has() { grep -qF -- "$2" <<<"$3" || fail "$1: expected \"$2\" in: $3"; }

command -v python3 >/dev/null || { echo "skipped: python3 (to pick free ports) is not installed"; exit 77; }
free_ports() {
	python3 -c '
import socket, sys
s = [socket.socket() for _ in range(int(sys.argv[1]))]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])' "$1"
}

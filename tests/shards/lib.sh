# tests/shards/lib.sh: what the shard tests share, sourced after their
# arguments are read: a work folder removed at exit together with every
# daemon whose pid the test added to pids; fail/die/has; free_ports N
# prints N free loopback ports (a shard's address is in the list every
# party holds, so it cannot be port 0); three_shards sets A, B, C (shards),
# R (rankd) and the shard list "$list"; start NAME OUTFILE cmd... runs a
# daemon; scorable IDS-FILE: every id scores non-zero for $user on rankd
# ($VISREC_RANKD). python3 picks the ports and computes owners
# (shardmap.py, on PYTHONPATH here): without it the test skips (77).
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
export PYTHONPATH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
free_ports() {
	python3 -c '
import socket, sys
s = [socket.socket() for _ in range(int(sys.argv[1]))]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])' "$1"
}

# three_shards: four free ports, three shards and rankd.
three_shards() {
	read -r p1 p2 p3 p4 < <(free_ports 4)
	A=127.0.0.1:$p1 B=127.0.0.1:$p2 C=127.0.0.1:$p3 R=127.0.0.1:$p4
	list="$A,$B,$C"
}

# start NAME OUTFILE cmd...: runs a daemon (its pid in $started), waits
# for its listening line.
start() {
	local name=$1 out=$2; shift 2
	"$@" >"$out" 2>>"$out.err" &
	started=$!
	pids+=($started)
	for _ in $(seq 300); do
		grep -q "listening on" "$out" && return 0
		kill -0 $started 2>/dev/null || { cat "$out.err" >&2; die "$name exited at start"; }
		sleep 0.1
	done
	die "$name did not start"
}

# scorable IDS-FILE: every id scores, with a non-zero score (its vector's
# visual terms: a zero row scores 0), for user $user.
scorable() {
	"$visrec" --json score --user "$user" $(cat "$1") >"$work/score.json" 2>"$work/score.err" || return 1
	python3 - "$work/score.json" "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
want = open(sys.argv[2]).read().split()
got = {s["item_id"]: float(s.get("score", 0)) for s in r.get("items", [])}
sys.exit(0 if want and all(i in got and got[i] != 0 for i in want) else 1)
PY
}

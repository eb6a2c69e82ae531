# tests/shards/lib.sh: what the shard tests share, sourced after their
# arguments are read: a work folder removed at exit together with every
# daemon whose pid the test added to pids; fail/die/has; step, wait_for,
# stop_pid and crashed (each wait bounded), and a watchdog; free_ports N
# prints N free loopback ports (a shard's address is in the list every
# party holds, so it cannot be port 0); three_shards sets A, B, C (shards),
# R (rankd) and the shard list "$list"; start NAME OUTFILE cmd... runs a
# daemon; two_to_three, move_shard, stop and owned_by: the fixture of the
# tests that move items from two shards to three; scorable IDS-FILE: every
# id scores non-zero for $user on rankd
# ($VISREC_RANKD). python3 picks the ports and computes owners
# (shardmap.py, on PYTHONPATH here): without it the test skips (77).
work=$(mktemp -d)
pids=()
watchdog=
cleanup() {
	[ -n "$watchdog" ] && kill -TERM "$watchdog" 2>/dev/null
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
# step TEXT: what the test is doing now; the watchdog names it.
step() { echo "$*" >"$work/step"; }
# wait_for SECONDS CMD...: until CMD succeeds (1: it did not in time).
wait_for() {
	local end=$((SECONDS + $1)); shift
	until "$@"; do [ $SECONDS -lt $end ] || return 1; sleep 0.2; done
}
# stop_pid NAME PID: SIGTERM, then at most 30 s for it to end; a daemon
# still running then is a failure (its log's tail printed) and is killed.
stop_pid() {
	kill -TERM "$2" 2>/dev/null
	for _ in $(seq 300); do kill -0 "$2" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$2" 2>/dev/null; then
		fail "$1 (pid $2) still runs 30 s after SIGTERM"
		kill -KILL "$2" 2>/dev/null
	fi
	wait "$2" 2>/dev/null
}
# crashed NAME PID: waits (at most 10 s) for a daemon that a crash point
# ends; its exit status in $st (0 and a failure when it did not end).
crashed() {
	for _ in $(seq 100); do kill -0 "$2" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$2" 2>/dev/null; then
		fail "$1 (pid $2) did not reach its crash point"
		kill -KILL "$2" 2>/dev/null
		wait "$2" 2>/dev/null
		st=0
		return
	fi
	wait "$2" 2>/dev/null; st=$?
}

# The watchdog: a test still running $budget s after it began says what
# it was doing (step) and what its daemons last logged, and ends, rather
# than being killed without a word by ctest's timeout (300 s).
budget=${VISREC_SHARD_TEST_BUDGET:-240}
trap 'exit 1' TERM
main_pid=$$
(
	sleep "$budget" &
	trap 'kill $! 2>/dev/null; exit 0' TERM
	wait $!
	{
		echo "FAIL: still running after ${budget} s, at: $(cat "$work/step" 2>/dev/null || echo "the start")"
		for f in "$work"/*.out.err; do
			[ -s "$f" ] && { echo "--- the last lines of $(basename "$f" .out.err)'s log:"; tail -n 12 "$f"; }
		done
	} >&2
	kill -TERM "$main_pid"
	pkill -TERM -P "$main_pid" # the command the test waits on, daemons included
) &
watchdog=$!

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

# two_to_three: the fixture of a move from two shards to three: four free
# ports as A, B, C (shards) and R (rankd), the lists from="$A,$B" and
# to="$A,$B,$C", and pid (each daemon's pid by name, for stop).
two_to_three() {
	local p1 p2 p3 p4
	read -r p1 p2 p3 p4 < <(free_ports 4)
	A=127.0.0.1:$p1 B=127.0.0.1:$p2 C=127.0.0.1:$p3 R=127.0.0.1:$p4
	from="$A,$B" to="$A,$B,$C"
	declare -gA pid
}
# move_shard NAME ADDR LIST [flags...]: (re)starts featured shard NAME at
# ADDR with the shard list LIST ($fault, when set: its crash point).
move_shard() {
	local name=$1 addr=$2 list=$3; shift 3
	start "shard $name" "$work/$name.out" env ${fault:+VISREC_FAULT=$fault} "$featured" \
		--listen "$addr" --data "$work/$name" --shards "$list" --shard-self "$addr" "$@"
	pid[$name]=$started
}
stop() { stop_pid "$1" "${pid[$1]}"; }
# owned_by OWNER DIR ADDR...: the ids of DIR's .jpg files that OWNER owns
# among the shards ADDR... (shardmap.h's hash).
owned_by() {
	local owner=$1 dir=$2; shift 2
	ls "$dir" | sed 's/\.jpg$//' | python3 -m shardmap "$@" | awk -v c="$owner" '$2 == c { print $1 }'
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

# Info readers over the CLI ($visrec, with VISREC_RANKD set by the test).
finfo() { "$visrec" --featured "$1" --json info 2>/dev/null || true; }
ffield() { # ffield ADDR FIELD: a field of featured ADDR's Info
	finfo "$1" | python3 -c 'import json, sys; print(json.load(sys.stdin)["featured"].get(sys.argv[1], 0))' "$2"
}
rinfo() { "$visrec" --json info 2>/dev/null | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["rankd"]))'; }
rshard() { # rshard ADDR FIELD: a field of rankd's featured_shards entry of ADDR
	rinfo | python3 -c '
import json, sys
s = [s for s in json.load(sys.stdin).get("featured_shards", []) if s["address"] == sys.argv[1]]
print(s[0].get(sys.argv[2], 0) if s else "missing")' "$1" "$2"
}
heads_match() { # heads_match ADDR...: rankd's position in each feed is the shard's last seq
	local a
	for a in "$@"; do [ "$(rshard "$a" seq)" = "$(ffield "$a" last_seq)" ] || return 1; done
}
items() { rinfo | python3 -c 'import json, sys; print(json.load(sys.stdin)["items"])'; }

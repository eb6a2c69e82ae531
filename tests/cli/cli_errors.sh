#!/usr/bin/env bash
# The visrec CLI's failures, without daemons: exit statuses, the gRPC status
# with a hint when a daemon is not there, --json/--save error objects, and
# an import that checks the whole file before sending anything.
#   tests/cli/cli_errors.sh VISREC_BINARY
set -uo pipefail
visrec=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
# A port nothing listens on: connections are refused at once.
closed=127.0.0.1:1

fail() { echo "FAIL: $*" >&2; failed=1; }

# expect STATUS NAME -- command...: runs it, keeps stdout/stderr in $out/$err.
expect() {
	local want=$1 name=$2; shift 3
	"$@" >"$work/out" 2>"$work/err"
	local got=$?
	out=$(cat "$work/out")
	err=$(cat "$work/err")
	if [ "$got" != "$want" ]; then
		fail "$name: exit status $got, expected $want"
		sed 's/^/  | /' "$work/err" >&2
	fi
}
has() { grep -qF -- "$2" <<<"$3" || fail "$1: expected \"$2\" in: $3"; }

expect 2 "no command" -- "$visrec"
has "no command" "usage: visrec" "$err"
expect 2 "unknown command" -- "$visrec" frobnicate
has "unknown command" 'unknown command "frobnicate"' "$err"
expect 0 "help" -- "$visrec" --help
has "help" "recommend" "$out"
expect 0 "command help" -- "$visrec" train --help
has "command help" "--model" "$out"
expect 2 "bad model" -- "$visrec" train --model xyz
has "bad model" "--model must be bpr, vbpr or dvbpr" "$err"
expect 2 "bad flag" -- "$visrec" eval --nope
has "bad flag" "unknown flag --nope" "$err"
expect 2 "bad k" -- "$visrec" eval --k 20,x
expect 2 "missing user" -- "$visrec" recommend -k 5

# A daemon that is not there: the status, the server's words, a hint.
expect 1 "rankd down" -- "$visrec" --rankd $closed eval
has "rankd down" "UNAVAILABLE" "$err"
has "rankd down" "is rankd running at $closed?" "$err"
expect 1 "featured down" -- env VISREC_FEATURED=$closed "$visrec" health
has "featured down" "is featured running at $closed?" "$err"
expect 1 "json error" -- "$visrec" --json recommend --rankd $closed --user u1 -k 3
has "json error" '"status":"UNAVAILABLE"' "$out"
has "json error" '"code":14' "$out"
expect 1 "save error" -- "$visrec" --rankd $closed --save "$work/train.json" train --model dvbpr
has "save error" '"model":"DVBPR"' "$(cat "$work/train.json")"
has "save error" '"status":"UNAVAILABLE"' "$(cat "$work/train.json")"
[ -z "$out" ] || fail "save error: stdout should be empty without --json: $out"

# A token comes from a file only this user can read; a bad one is named
# before any call.
printf 'tok-1\n' >"$work/open.token"
chmod 644 "$work/open.token"
expect 1 "open token file" -- "$visrec" --rankd $closed --token-file "$work/open.token" eval
has "open token file" "open to every user of this machine (mode 0644)" "$err"
printf 'tok-1\n' >"$work/ok.token"
chmod 600 "$work/ok.token"
expect 1 "two tokens" -- env VISREC_TOKEN=tok-2 "$visrec" --rankd $closed --token-file "$work/ok.token" eval
has "two tokens" "--token and --token-file are both set" "$err"
expect 1 "token file, rankd down" -- "$visrec" --rankd $closed --token-file "$work/ok.token" eval
has "token file, rankd down" "is rankd running at $closed?" "$err"

# Import: every malformed row named with its line; nothing sent (rankd is
# not even asked: the check comes first).
printf 'user,item,timestamp\nu1,i1,1\nu2,i2,later\nu3\n"u4,i4,4\n' >"$work/bad.csv"
expect 1 "bad csv" -- "$visrec" --rankd $closed import "$work/bad.csv"
has "bad csv" "bad.csv:3: timestamp \"later\" is not integer seconds or ISO 8601" "$err"
has "bad csv" "bad.csv:4: 1 field(s)" "$err"
has "bad csv" "bad.csv:5: a quoted field does not end" "$err"
has "bad csv" "3 malformed row(s)" "$err"
has "bad csv" "nothing was sent" "$err"
expect 1 "missing csv" -- "$visrec" import "$work/none.csv"
has "missing csv" "cannot open" "$err"

# Ingest of a folder without JPEGs.
mkdir -p "$work/empty"
expect 1 "no jpegs" -- "$visrec" --featured $closed ingest "$work/empty"
has "no jpegs" "no .jpg files" "$err"
expect 2 "ingest args" -- "$visrec" ingest
has "ingest args" "needs one folder" "$err"

# Vectors: usage, a missing id list, featured down; no file is left.
expect 2 "vectors args" -- "$visrec" vectors
has "vectors args" "needs one output file" "$err"
expect 2 "vectors --id" -- "$visrec" vectors "$work/v.npy" --id
has "vectors --id" "--id needs a value" "$err"
expect 1 "vectors ids file" -- "$visrec" --featured $closed vectors "$work/v.npy" --ids "$work/none.txt"
has "vectors ids file" "cannot open" "$err"
expect 1 "vectors featured down" -- "$visrec" --featured $closed vectors "$work/v.npy" --id i1
has "vectors featured down" "is featured running at $closed?" "$err"
ls "$work" | grep -q '^v\.' && fail "vectors: a failed export left files: $(ls "$work")"

# Files only: datagen, showcase and report work without daemons.
expect 0 "datagen" -- "$visrec" --json datagen --out "$work/d" --users 20 --items 60 --interactions 200 --image-min 32 --image-max 64
has "datagen" '"users":20' "$out"
expect 0 "showcase" -- "$visrec" showcase --data "$work/d" -n 4
[ "$(tr ',' '\n' <<<"$out" | wc -l)" = 4 ] || fail "showcase: expected 4 users, got $out"
expect 0 "report" -- "$visrec" report --run "$work" --data "$work/d" --out "$work/r.html"
has "report" "report written to $work/r.html" "$out"
has "report" 'id="metrics-table"' "$(cat "$work/r.html")"

[ $failed = 0 ] && echo "cli_errors: ok"
exit $failed

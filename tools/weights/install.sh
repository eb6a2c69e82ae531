#!/usr/bin/env bash
# tools/weights/install.sh [--cache DIR] [--quiet]: set-up-time install of
# the out-of-the-box pretrained network. Gets npm's nsfwjs@4.4.0 and
# @tensorflow/tfjs by name from the lockfile (npm ci, here in
# tools/weights/node_modules), converts nsfwjs's Keras MobileNetV2 into
#   DIR/mobilenet_v2.safetensors            (featured --arch mobilenet_v2 --weights ...)
# and computes with TensorFlow.js the reference outputs the parity test
# (tests/weights, ctest weights.tfjs) checks our net against:
#   DIR/mobilenet_v2.reference.safetensors
# DIR: --cache, else $VISREC_CACHE, else ~/.cache/visrec. Idempotent: when
# the files exist and were made by the same lockfile and scripts it does
# nothing. Nothing is downloaded at run time; this is the only step that
# reaches a registry (npm). Prints the weights file's path on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${VISREC_CACHE:-${HOME:-/root}/.cache/visrec}
quiet=0
while [ $# -gt 0 ]; do
	case $1 in
	--cache) cache=$2; shift ;;
	--quiet) quiet=1 ;;
	-h|--help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done
say() { [ $quiet = 1 ] || echo "weights: $*" >&2; }
log=/dev/stderr
[ $quiet = 1 ] && log=/dev/null

command -v node >/dev/null && command -v npm >/dev/null ||
	{ echo "install.sh: needs node and npm (Debian: nodejs npm)" >&2; exit 1; }
mkdir -p "$cache"
weights=$cache/mobilenet_v2.safetensors
reference=$cache/mobilenet_v2.reference.safetensors
stamp_file=$cache/mobilenet_v2.stamp
stamp=$(cd "$here" && cat package-lock.json nsfwjs.js convert-nsfwjs.js reference.js | sha256sum | cut -c1-64)

if [ -s "$weights" ] && [ -s "$reference" ] && [ "$(cat "$stamp_file" 2>/dev/null)" = "$stamp" ]; then
	say "up to date: $weights"
	echo "$weights"
	exit 0
fi

lock=$(sha256sum "$here/package-lock.json" | cut -c1-64)
if [ "$(cat "$here/node_modules/.visrec-lock" 2>/dev/null)" != "$lock" ]; then
	say "npm ci (nsfwjs@4.4.0, @tensorflow/tfjs) in $here"
	(cd "$here" && npm ci --no-audit --no-fund --loglevel=error >"$log")
	echo "$lock" >"$here/node_modules/.visrec-lock"
fi

say "converting nsfwjs's MobileNetV2 into $weights"
node "$here/convert-nsfwjs.js" "$weights" >"$log"
say "TensorFlow.js reference outputs into $reference"
# TensorFlow.js prints a hint about its native backend on stdout; keep
# stdout for the path.
node "$here/reference.js" "$reference" >"$log"
echo "$stamp" >"$stamp_file"
echo "$weights"

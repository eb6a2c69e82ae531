#!/bin/sh
# ctest's entry to interop.js: runs it with node, or skips (exit 77) and
# says why when node or the npm packages it needs are not installed.
here=$(cd "$(dirname "$0")" && pwd)
if ! command -v node >/dev/null 2>&1; then
	echo "skipped: node is not installed (deploy/install-deps.sh installs nodejs)"
	exit 77
fi
if [ ! -d "$here/node_modules/@grpc/grpc-js" ] || [ ! -d "$here/node_modules/@grpc/proto-loader" ]; then
	echo "skipped: @grpc/grpc-js is not installed: run npm ci in tests/interop (./test.sh does)"
	exit 77
fi
exec node "$here/interop.js" "$@"

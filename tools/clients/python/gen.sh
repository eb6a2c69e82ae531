#!/bin/sh
# Generates the Python stubs of visrec's protos into OUT_DIR (a build
# folder: generated code is never committed), with Debian's grpcio tools
# (python3-grpc-tools): OUT_DIR/visrec/v1/{featured,rankd}_pb2{,_grpc}.py.
#   tools/clients/python/gen.sh OUT_DIR [PYTHON]
# Exit status 77 (and the reason) when grpc_tools is not importable, so a
# test can skip rather than fail.
set -eu
out=${1:?usage: gen.sh OUT_DIR [PYTHON]}
py=${2:-python3}
proto=$(cd "$(dirname "$0")/../../../proto" && pwd)
if ! "$py" -c 'import grpc_tools.protoc, grpc' 2>/dev/null; then
	echo "gen.sh: $py cannot import grpc_tools and grpc (Debian: apt-get install python3-grpc-tools python3-grpcio)" >&2
	exit 77
fi
mkdir -p "$out"
"$py" -m grpc_tools.protoc -I"$proto" --python_out="$out" --grpc_python_out="$out" \
	"$proto/visrec/v1/featured.proto" "$proto/visrec/v1/rankd.proto"
# Python 3 finds visrec.v1 as namespace packages; empty __init__.py files
# make it a regular package for tools that want one.
touch "$out/visrec/__init__.py" "$out/visrec/v1/__init__.py"

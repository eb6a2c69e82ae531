#!/usr/bin/env bash
# Installs, by package name, what building and testing visrec needs on
# Debian 12, and only what is missing (dpkg is asked first, so a second run
# costs a second). Used by run.sh and test.sh; safe to run by hand.
#   deploy/install-deps.sh          build + run dependencies
#   deploy/install-deps.sh --test   also what the test suite needs
set -euo pipefail

pkgs=(cmake make gcc pkg-config
      libgrpc-dev protobuf-c-compiler libprotobuf-c-dev
      liblmdb-dev libturbojpeg0-dev libopenblas-dev libcjson-dev zlib1g-dev libmicrohttpd-dev
      libdnnl-dev ocl-icd-opencl-dev
      nodejs npm)
if [ "${1:-}" = "--test" ]; then
	# openssl makes the TLS test certificate; chromium renders the report;
	# Fashion-MNIST is the real-image option of the data generator;
	# PyTorch is the independent reference the network parity tests compare
	# with, torchvision the ResNet-50 of weights.torch_parity; clang with its
	# runtimes (libFuzzer, ASan, UBSan) builds the fuzz harnesses;
	# numpy reads `visrec vectors`' .npy files back and grpcio with its
	# tools generates and runs the Python example client (tests/clients);
	# tmux runs `visrec top` in its test; python3-yaml reads deploy/k8s in
	# tests/deploy; libgrpc++ with its protoc plugin builds the C++ peer
	# bench_rpc compares with, and perf counts per call; jemalloc is the
	# allocator the PyTorch peers of the benchmarks run with
	# (docs/measuring.md: PyTorch at its best).
	pkgs+=(openssl chromium dataset-fashion-mnist python3-torch python3-torchvision clang
		libclang-rt-14-dev python3-numpy python3-grpcio python3-grpc-tools tmux python3-yaml
		libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler linux-perf
		libjemalloc2)
fi

missing=()
for p in "${pkgs[@]}"; do
	# npm may come from elsewhere (e.g. a newer npm over Debian's node).
	if [ "$p" = npm ] && command -v npm >/dev/null 2>&1; then continue; fi
	if [ "$p" = nodejs ] && command -v node >/dev/null 2>&1; then continue; fi
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "install-deps: installing ${missing[*]}"
	SUDO=
	[ "$(id -u)" -eq 0 ] || SUDO=sudo
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

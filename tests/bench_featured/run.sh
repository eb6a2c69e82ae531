#!/bin/sh
# Ingest benchmark: the featured daemon over gRPC (bench_featured) beside
# torchvision's AlexNet with its DataLoader (torch_peer.py), on the same
# JPEGs of 500x375 and the same 2 cores, alternated per layer (A B A B),
# ours on the oneDNN backend in FP32 and in BF16 (where the CPU has
# avx512_bf16) and on the reference kernels (cpu-ref), PyTorch in FP32 and
# under autocast BF16; then CNN-F (ours only: torchvision has none),
# PyTorch once more with its stock malloc, and the medians. Before that,
# per rep, the networks alone (gpu's bench_nn, -B onednn -m fp32|bf16 and
# -B cpu-ref, beside bench_torch_alexnet.py -m fp32|bf16): AlexNet and
# MobileNetV2 at batch 16 and 64, inference and a training step (Adam);
# once, OpenBLAS's sgemm rate; and at the end, what BF16 costs in
# agreement with FP32 (bench_precision: cosine of each image's two
# vectors, AlexNet fc7 and, where ~/.cache/visrec has its weights,
# MobileNetV2's pretrained avgpool features).
#
#   tests/bench_featured/run.sh BUILD_DIR [N_IMAGES] [REPS]   (1000, 1)
#
# The JPEGs go to $VR_BENCH_DIR (default /dev/shm/visrec-bench-featured),
# removed at the end unless VR_BENCH_KEEP=1; featured's data directories go
# to /tmp (a real disk: its commits are fsynced) and are removed by
# bench_featured. PyTorch runs at its best per docs/measuring.md: 2 threads
# (set in torch_peer.py), 1 DataLoader worker (0 halves its rate, 2 add
# nothing on 2 cores), OpenBLAS, jemalloc preloaded. A build without
# oneDNN runs the reference only (bench_featured says which backend ran).
set -eu
build=${1:?usage: run.sh BUILD_DIR [N_IMAGES] [REPS]}
n=${2:-1000}
reps=${3:-1}
here=$(cd "$(dirname "$0")" && pwd)
dir=${VR_BENCH_DIR:-/dev/shm/visrec-bench-featured}
log=$(mktemp)
jemalloc=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
[ -e "$jemalloc" ] || echo "note: $jemalloc is missing (deploy/install-deps.sh --test installs libjemalloc2); PyTorch runs with the stock allocator and says so" >&2
bench="$build/tests/bench_featured/bench_featured"
nets=$(mktemp)
trap '[ "${VR_BENCH_KEEP:-0}" = 1 ] || rm -rf "$dir"; rm -f "$log" "$nets"' EXIT
jemalloc_env="LD_PRELOAD=$jemalloc MALLOC_CONF=oversize_threshold:0,dirty_decay_ms:-1,muzzy_decay_ms:-1"
# ours: backend:precision
backends="onednn:fp32 onednn:bf16 cpu-ref:fp32"
"$build/tests/gpu/bench_nn" -B onednn -m bf16 -a small -b 1 -i 1 >/dev/null 2>&1 ||
	backends="onednn:fp32 cpu-ref:fp32"
"$build/tests/gpu/bench_nn" -B onednn -a small -b 1 -i 1 >/dev/null 2>&1 || backends=cpu-ref:fp32

rm -rf "$dir"
"$bench" --make "$n" "$dir"
if [ -x "$build/tests/gpu/bench_nn" ]; then
	echo "== OpenBLAS's sgemm (gpu's bench_nn; the reference kernels' ceiling)"
	"$build/tests/gpu/bench_nn" -g -a small -b 1 -i 1
fi
for rep in $(seq "$reps"); do
	if [ -x "$build/tests/gpu/bench_nn" ]; then
		for b in 16 64; do
			for bp in $backends; do
				echo "== rep $rep: the network alone, visrec $bp, batch $b"
				"$build/tests/gpu/bench_nn" -B "${bp%:*}" -m "${bp#*:}" -a alexnet,mobilenet_v2 \
					-b "$b" -i 3 | sed "s/^/net $bp /" | tee -a "$nets"
			done
			for m in fp32 bf16; do
				echo "== rep $rep: the network alone, pytorch $m (jemalloc), batch $b"
				env $jemalloc_env /usr/bin/python3 "$here/../gpu/bench_torch_alexnet.py" \
					-a alexnet,mobilenet_v2 -b "$b" -i 3 -m $m |
					sed "s/^/net torch:$m /" | tee -a "$nets"
			done
		done
	fi
	for layer in fc7 output; do
		for bp in $backends; do
			echo "== rep $rep: visrec alexnet $layer ($bp)"
			"$bench" "$dir" --arch alexnet --layer "$layer" --backend "${bp%:*}" \
				--precision "${bp#*:}" | tee -a "$log"
		done
		for m in fp32 bf16; do
			echo "== rep $rep: pytorch alexnet $layer $m (jemalloc)"
			env $jemalloc_env /usr/bin/python3 "$here/torch_peer.py" "$dir" --layer "$layer" \
				--precision $m | tee -a "$log"
		done
	done
	for layer in fc7 output; do
		for bp in $backends; do
			echo "== rep $rep: visrec cnnf $layer ($bp)"
			"$bench" "$dir" --arch cnnf --layer "$layer" --backend "${bp%:*}" \
				--precision "${bp#*:}" | tee -a "$log"
		done
	done
done
echo "== pytorch alexnet fc7 (stock malloc)"
/usr/bin/python3 "$here/torch_peer.py" "$dir" --layer fc7 | tee -a "$log"

if [ -x "$build/tests/bench_featured/bench_precision" ]; then
	echo "== BF16 against FP32 on these JPEGs (onednn)"
	"$build/tests/bench_featured/bench_precision" "$dir" alexnet fc7 224 seed:1 || true
	mnet="$HOME/.cache/visrec/mobilenet_v2.safetensors"
	[ -e "$mnet" ] && "$build/tests/bench_featured/bench_precision" "$dir" mobilenet_v2 avgpool 224 \
		"$mnet" || true
fi
echo "== medians over $reps runs (stock PyTorch: 1 run)"
/usr/bin/python3 - "$log" "$nets" <<'PY'
import json, re, statistics, sys
net = {}
pat = re.compile(r"^net (\S+) (\S+)\s+\d+\s+batch\s+(\d+)\s+inference\s+([\d.]+) img/s.*?"
                 r"train step\s+([\d.]+) img/s")
for line in open(sys.argv[2]):
    m = pat.match(line)
    if m:
        net.setdefault((m[2], int(m[3]), m[1]), []).append((float(m[4]), float(m[5])))
if net:
    print("the network alone, images/s (median; ratio to torch jemalloc):")
    for key in sorted(net):
        inf = statistics.median(r[0] for r in net[key])
        tr = statistics.median(r[1] for r in net[key])
        # against PyTorch in the same precision, and (BF16) against its FP32
        prec = key[2].split(":")[-1]
        t = net.get((key[0], key[1], "torch:" + prec))
        t32 = net.get((key[0], key[1], "torch:fp32"))
        ratio = ""
        if t and t32 and prec == "bf16" and not key[2].startswith("torch"):
            ratio = (f"  ({inf / statistics.median(r[0] for r in t):.2f}x torch bf16, "
                     f"{inf / statistics.median(r[0] for r in t32):.2f}x torch fp32 inference)")
        elif t and not key[2].startswith("torch"):
            ratio = (f"  ({inf / statistics.median(r[0] for r in t):.2f}x, "
                     f"{tr / statistics.median(r[1] for r in t):.2f}x)")
        print(f"  {key[0]:>12} batch {key[1]:3d} {key[2]:<14} inference {inf:7.1f}  "
              f"train step {tr:7.1f}{ratio}")
rows = {}
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line)
        name = (r["impl"] + " " + r.get("backend", "") if r["impl"] == "visrec" else
                r["impl"] + (" jemalloc" if r["jemalloc"] else " stock"))
        name += " " + r.get("precision", "fp32")
        rows.setdefault((r["arch"], r["layer"], name), []).append(r)
for key in sorted(rows):
    runs = rows[key]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]
           if isinstance(runs[0][k], (int, float)) and not isinstance(runs[0][k], bool)}
    print(f"{key[0]:>8} {key[1]:<7} {key[2]:<22} " + "  ".join(f"{k}={v:g}" for k, v in med.items()))
def rate(layer, name):
    runs = rows.get(("alexnet", layer, name))
    return statistics.median(r["images_per_s"] for r in runs) if runs else None
for layer in ("fc7", "output"):
    for ours, peer in (("onednn fp32", "fp32"), ("onednn bf16", "bf16"), ("onednn bf16", "fp32")):
        a, b = rate(layer, "visrec " + ours), rate(layer, "pytorch jemalloc " + peer)
        if a and b:
            print(f"ingest alexnet {layer}: visrec {ours} / torchvision {peer} (jemalloc) = "
                  f"{a:.1f} / {b:.1f} = {a / b:.2f}x")
PY

#!/usr/bin/env bash
# weights.vbpr_pretrained: on a small generated data set (fixed seed), VBPR
# with features of the pretrained MobileNetV2 (block_10, input 96) ranks
# cold items better than VBPR with the same net randomly initialised: the
# offline harness of vbpr_coldstart.py (the pipeline's daemons are not
# needed to tell features apart). Skips (77) without the converted weights
# (tools/weights/install.sh) or PyTorch.
#   vbpr_pretrained.sh DATAGEN VBPR_FEATURES
set -euo pipefail
datagen=$1 features=$2
here=$(cd "$(dirname "$0")" && pwd)
weights=${VISREC_CACHE:-${HOME:-/root}/.cache/visrec}/mobilenet_v2.safetensors
[ -s "$weights" ] || { echo "skipped: no $weights (run tools/weights/install.sh)"; exit 77; }
/usr/bin/python3 -c 'import torch' 2>/dev/null || { echo "skipped: no PyTorch"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$datagen" --out "$tmp/data" --users 300 --items 600 --interactions 12000 --cold-frac 0.3 \
	--image-max 128 --seed 5 >/dev/null
"$features" "$tmp/data" "$tmp/pretrained.bin" mobilenet_v2 block_10 96 "$weights"
"$features" "$tmp/data" "$tmp/random.bin" mobilenet_v2 block_10 96 seed:1
/usr/bin/python3 "$here/vbpr_coldstart.py" "$tmp/data" pretrained="$tmp/pretrained.bin" \
	random="$tmp/random.bin" --seeds 1 --expect-better pretrained random

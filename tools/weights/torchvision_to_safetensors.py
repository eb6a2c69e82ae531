#!/usr/bin/env python3
"""Converts torchvision ImageNet weights into a visrec weights file.

    torchvision_to_safetensors.py alexnet  alexnet.safetensors
    torchvision_to_safetensors.py resnet50 resnet50.safetensors
    torchvision_to_safetensors.py resnet50 out.safetensors --state-dict my.pth

Without --state-dict it asks torchvision for its ImageNet weights
(IMAGENET1K_V1; torchvision downloads them once into its cache), so run it
on a machine that can reach them; the output file is all visrec needs.
Our "alexnet" and "resnet50" architectures use torchvision's state_dict
names, so tensors move one to one. The file is F32 safetensors with the
metadata nn_net_load and featured read (format, arch, num_outputs,
input_size, ImageNet mean and std); batch norm's num_batches_tracked, which
inference does not use, is left out. Needs only PyTorch (and torchvision
unless --state-dict is given); not the safetensors package."""
import argparse
import json
import struct
import sys

import numpy as np

IMAGENET_MEAN = "0.485,0.456,0.406"
IMAGENET_STD = "0.229,0.224,0.225"
# The layer whose weight rows are the net's K outputs.
LAST = {"alexnet": "classifier.6.weight", "resnet50": "fc.weight"}


def write_safetensors(path, tensors, metadata):
    """tensors: name -> float32 array (C order); metadata: str -> str."""
    header = {"__metadata__": metadata}
    offset = 0
    blobs = []
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        blobs.append(a)
    head = json.dumps(header).encode()
    head += b" " * ((8 - len(head) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for a in blobs:
            f.write(a.tobytes())


def read_safetensors(path):
    """The F32 tensors (name -> float32 array) and the metadata (str -> str)
    of a safetensors file, as write_safetensors and our C code write them;
    the tests read the nets' files with it."""
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        assert t["dtype"] == "F32", t
        b, e = t["data_offsets"]
        out[name] = np.frombuffer(data[b:e], dtype=np.float32).reshape(t["shape"]).copy()
    return out, header.get("__metadata__", {})


def convert(state_dict, arch, path, input_size=224, source=""):
    """Writes a torchvision-layout state_dict of arch as a visrec file."""
    tensors = {k: v.detach().cpu().float().numpy() for k, v in state_dict.items()
               if v.is_floating_point()}
    if LAST[arch] not in tensors:
        raise SystemExit(f"{arch}: the state_dict has no {LAST[arch]}; is it a torchvision {arch}?")
    metadata = {"format": "visrec-nn", "arch": arch,
                "num_outputs": str(tensors[LAST[arch]].shape[0]),
                "input_size": str(input_size), "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    if source:
        metadata["source"] = source
    write_safetensors(path, tensors, metadata)
    return len(tensors), sum(a.size for a in tensors.values())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("arch", choices=sorted(LAST))
    p.add_argument("out")
    p.add_argument("--state-dict", help="a .pth state_dict to convert instead of torchvision's")
    a = p.parse_args()
    import torch
    if a.state_dict:
        sd = torch.load(a.state_dict, map_location="cpu")
        sd = sd.get("state_dict", sd)
        source = a.state_dict
    else:
        import torchvision
        sd = getattr(torchvision.models, a.arch)(weights="IMAGENET1K_V1").state_dict()
        source = f"torchvision {torchvision.__version__} {a.arch} IMAGENET1K_V1"
    n, params = convert(sd, a.arch, a.out, source=source)
    print(f"{a.out}: {n} tensors, {params} parameters")


if __name__ == "__main__":
    sys.exit(main())

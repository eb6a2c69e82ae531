#!/usr/bin/python3
"""Whole nets against PyTorch: for each architecture, nn_dump (our CPU
backend, float32) writes its weights, an input, the output and every
gradient; the same net written in torch.nn (the layer names of our
state_dicts), loaded from our safetensors file by name, recomputes them
in float64. Pass: every tensor within 1e-5 of the reference, relative to
the tensor's largest magnitude.

Usage: torch_parity.py PATH_TO_nn_dump [--alexnet]. Exits 77 (skip)
without PyTorch. AlexNet (57 M parameters: ~15 s, mostly writing and
loading its weights) runs only with --alexnet; its layers are all in the
other two nets or in the layer tests, and its names in test_net.c."""
import importlib.util
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
    from torch import nn
except ImportError as e:
    print(f"skipped: {e}")
    sys.exit(77)

TOL = 1e-5
HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location(
    "tv2st", os.path.join(HERE, "..", "..", "tools", "weights", "torchvision_to_safetensors.py"))
tv2st = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tv2st)


def read_safetensors(path):
    """A file's tensors as float64 torch tensors, and its metadata (the
    reader is tools/weights/torchvision_to_safetensors.py's)."""
    tensors, meta = tv2st.read_safetensors(path)
    return {n: torch.from_numpy(a).double() for n, a in tensors.items()}, meta


def alexnet(k):
    m = nn.Module()
    m.features = nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))
    m.avgpool = nn.AdaptiveAvgPool2d((6, 6))
    m.classifier = nn.Sequential(
        nn.Dropout(), nn.Linear(9216, 4096), nn.ReLU(),
        nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, k))
    m.run = lambda x: m.classifier(torch.flatten(m.avgpool(m.features(x)), 1))
    return m


def cnnf(k, fc6_in):
    m = nn.Module()
    lrn = lambda: nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)
    m.features = nn.Sequential(
        nn.Conv2d(3, 64, 11, 4), nn.ReLU(), lrn(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 256, 5, padding=2), nn.ReLU(), lrn(), nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))
    m.classifier = nn.Sequential(
        nn.Linear(fc6_in, 4096), nn.ReLU(), nn.Dropout(),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, k))
    m.run = lambda x: m.classifier(torch.flatten(m.features(x), 1))
    return m


def small(k, fc_in):
    m = nn.Module()
    layers = []
    for i in range(4):
        layers += [nn.Conv2d(3 if i == 0 else 8 << i, 16 << i, 3, padding=1), nn.ReLU(),
                   nn.MaxPool2d(2)]
    m.features = nn.Sequential(*layers)
    m.classifier = nn.Sequential(nn.Linear(fc_in, 256), nn.ReLU(), nn.Dropout(),
                                 nn.Linear(256, k))
    m.run = lambda x: m.classifier(torch.flatten(m.features(x), 1))
    return m


def check(dump, arch, size, k, batch, make):
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([dump, arch, str(size), str(k), str(batch), "7", d], check=True)
        weights, meta = read_safetensors(os.path.join(d, "weights.safetensors"))
        io, _ = read_safetensors(os.path.join(d, "io.safetensors"))
    assert meta["arch"] == arch and int(meta["num_outputs"]) == k, meta
    m = make().double()
    m.load_state_dict(weights)            # strict: every name and shape must match
    m.eval()
    x = io["x"].clone().requires_grad_()
    y = m.run(x)
    (y * io["r"]).sum().backward()
    worst = 0.0
    pairs = [("y", y.detach(), io["y"]), ("dx", x.grad, io["dx"])]
    pairs += [(name, p.grad, io["grad." + name]) for name, p in m.named_parameters()]
    for name, ref, ours in pairs:
        err = (ours - ref).abs().max().item() / max(ref.abs().max().item(), 1e-30)
        worst = max(worst, err)
        if not err <= TOL:
            print(f"FAIL {arch}: {name} relative error {err:.3g} (tolerance {TOL})")
            return False
    print(f"ok   {arch} at {size}, batch {batch}: {len(pairs)} tensors, "
          f"worst relative error {worst:.2e}")
    return True


def main():
    dump = sys.argv[1]
    torch.manual_seed(0)
    ok = check(dump, "small", 16, 5, 2, lambda: small(5, 128))
    ok &= check(dump, "cnnf", 99, 6, 2, lambda: cnnf(6, 256 * 2 * 2))
    if "--alexnet" in sys.argv:
        ok &= check(dump, "alexnet", 63, 4, 2, lambda: alexnet(4))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

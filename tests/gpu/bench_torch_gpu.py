#!/usr/bin/env python3
"""PyTorch + cuDNN on the GPU, beside nn_cuda_bench (tests/gpu/cuda/bench.c)
on the same card in the same call: the same AlexNet and CNN-F
(bench_torch_alexnet.py's torch.nn definitions), channels-first, the same
batch, torch.backends.cudnn.benchmark = True, Adam(lr=1e-4,
weight_decay=1e-4) as ours. Per math mode (fp32: TF32 off in cuDNN and in
matmuls; tf32: on in both; bf16: AMP autocast to bfloat16 with the net and
input in channels_last, TF32 on for the rest) and net, images/s as the median of -i timed
runs after two warm-up runs, each run ended by torch.cuda.synchronize():

  infer_u8   eval, no_grad: pinned uint8 HWC images to the GPU
             (non_blocking), permute, normalise, forward, output to host
  infer_f32  eval, no_grad: normalised float input from pageable host
             memory, forward, output to host
  infer_dev  eval, no_grad: forward on an input already on the GPU
  train_u8   zero_grad, forward from the uint8 images as in infer_u8,
             backward of a fixed output gradient, Adam step
  train_dev  the same step from an input already on the GPU

  python3 bench_torch_gpu.py [-a alexnet,cnnf] [-b 256] [-i 10] [-m fp32,tf32]

Prints readable lines and, per figure, "RESULT torch <arch> <mode> <metric>
<images/s>". Exits 77 when PyTorch sees no CUDA device. -d cpu runs the
same on the CPU (to check this script without a GPU; no pinning)."""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_torch_alexnet import alexnet, cnnf  # noqa: E402

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, iters, dev):
    for _ in range(2):
        fn()
    sync(dev)
    t = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync(dev)
        t.append(time.perf_counter() - t0)
    return statistics.median(t)


class Amp(torch.nn.Module):
    """bf16 mode: the net in channels_last under AMP autocast to bfloat16,
    PyTorch's fastest recipe for convnets on tensor cores; output in FP32."""

    def __init__(self, net, on):
        super().__init__()
        self.net, self.on = net, on
        if on:
            self.net = self.net.to(memory_format=torch.channels_last)

    def forward(self, x):
        if self.on:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.on):
            return self.net(x).float()


def bench(arch, mode, b, size, iters, dev):
    k = 100 if arch == "alexnet" else 50
    m = Amp(alexnet(k) if arch == "alexnet" else cnnf(k, size), mode == "bf16").to(dev)
    mean = torch.tensor(MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=dev).view(1, 3, 1, 1)
    gen = torch.Generator().manual_seed(1)
    u8 = torch.randint(0, 256, (b, size, size, 3), dtype=torch.uint8, generator=gen)
    if dev.type == "cuda":
        u8 = u8.pin_memory()
    xf = torch.rand(b, 3, size, size, generator=gen) * 4 - 2
    xd = xf.to(dev)
    dy = (torch.rand(b, k, generator=gen, dtype=torch.float32) * 2 - 1).to(dev) * 1e-3

    def load_u8():
        x = u8.to(dev, non_blocking=True).permute(0, 3, 1, 2).float()
        return (x / 255.0 - mean) / std

    rates = {}
    m.eval()

    def infer_u8():
        with torch.no_grad():
            m(load_u8()).cpu()

    def infer_f32():
        with torch.no_grad():
            m(xf.to(dev)).cpu()

    def infer_dev():
        with torch.no_grad():
            m(xd)

    for name, fn in (("infer_u8", infer_u8), ("infer_f32", infer_f32), ("infer_dev", infer_dev)):
        rates[name] = b / timed(fn, iters, dev)
    m.train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-4, weight_decay=1e-4)

    def train_u8():
        opt.zero_grad()
        m(load_u8()).backward(dy)
        opt.step()

    def train_dev():
        opt.zero_grad()
        m(xd).backward(dy)
        opt.step()

    for name, fn in (("train_u8", train_u8), ("train_dev", train_dev)):
        rates[name] = b / timed(fn, iters, dev)
    for name, r in rates.items():
        print(f"  {arch} {mode} {name:10s} {r:9.1f} images/s  ({1e3 * b / r:.2f} ms per batch)")
        print(f"RESULT torch {arch} {mode} {name} {r:.1f}", flush=True)
    del m, opt
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("-a", default="alexnet,cnnf")
    p.add_argument("-b", type=int, default=256)
    p.add_argument("-i", type=int, default=10)
    p.add_argument("-m", default="fp32,tf32,bf16")
    p.add_argument("-S", type=int, default=224)
    p.add_argument("-d", default="cuda")
    a = p.parse_args()
    dev = torch.device(a.d)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("bench_torch_gpu: SKIPPED: no CUDA device found (torch.cuda.is_available() is False)")
        sys.exit(77)
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
          f"{torch.backends.cudnn.version()}, {name}", flush=True)
    for mode in a.m.split(","):
        tf32 = mode != "fp32"
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for arch in a.a.split(","):
            bench(arch, mode, a.b, a.S, a.i, dev)


if __name__ == "__main__":
    main()

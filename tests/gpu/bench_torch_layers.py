#!/usr/bin/env python3
"""PyTorch's AlexNet training step layer by layer, beside nn_cuda_bench -p
(tests/gpu/cuda/bench.c): the same net (bench_torch_alexnet.py, K=100) and
batch, cudnn.benchmark on; each layer's forward and backward timed alone,
synchronised, mean of -i steps after two warm-ups. Each layer's input is a
detached leaf, so its backward (parameter gradients and the input
gradient) stops at the layer; ReLUs run out of place for that.

  python3 bench_torch_layers.py [-b 256] [-i 10] [-m fp32,tf32] [-d cuda]"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_torch_alexnet import alexnet  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("-b", type=int, default=256)
    p.add_argument("-i", type=int, default=10)
    p.add_argument("-m", default="fp32,tf32")
    p.add_argument("-d", default="cuda")
    a = p.parse_args()
    dev = torch.device(a.d)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("bench_torch_layers: SKIPPED: no CUDA device found")
        sys.exit(77)
    torch.backends.cudnn.benchmark = True

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    for mode in a.m.split(","):
        tf32 = mode == "tf32"
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        net = alexnet(100).to(dev).train()
        layers = [m for m in net if not isinstance(m, torch.nn.Flatten)]
        for m in layers:
            if isinstance(m, torch.nn.ReLU):
                m.inplace = False
        fwd = [0.0] * len(layers)
        bwd = [0.0] * len(layers)
        shapes = [None] * len(layers)
        x0 = torch.rand(a.b, 3, 224, 224, device=dev)
        for it in range(a.i + 2):
            xs, ys = [], []
            x = x0
            for k, m in enumerate(layers):
                x = x.detach().requires_grad_(k > 0)  # as ours: no gradient for the images
                sync()
                t0 = time.perf_counter()
                y = m(x)
                if isinstance(m, torch.nn.AdaptiveAvgPool2d):
                    y = y.flatten(1)
                sync()
                if it >= 2:
                    fwd[k] += time.perf_counter() - t0
                shapes[k] = tuple(y.shape[1:])
                xs.append(x)
                ys.append(y)
                x = y
            g = torch.full_like(ys[-1], 1e-3)
            for k in range(len(layers) - 1, -1, -1):
                sync()
                t0 = time.perf_counter()
                ys[k].backward(g)
                sync()
                if it >= 2:
                    bwd[k] += time.perf_counter() - t0
                g = xs[k].grad
            net.zero_grad(set_to_none=True)
        print(f"torch {mode}: AlexNet training step at batch {a.b}, per layer (ms, each layer "
              "synchronised):")
        for k, m in enumerate(layers):
            name = type(m).__name__
            if isinstance(m, torch.nn.Conv2d):
                name += f" {m.in_channels}>{m.out_channels} {m.kernel_size[0]}x" \
                        f"{m.kernel_size[1]}/{m.stride[0]}"
            elif isinstance(m, torch.nn.Linear):
                name += f" {m.in_features}>{m.out_features}"
            shape = "x".join(str(v) for v in shapes[k])
            print(f"    {k:2d} {name:28s} {shape:>12s} {1e3 * fwd[k] / a.i:8.3f} "
                  f"{1e3 * bwd[k] / a.i:8.3f}")
        print(f"    {'sum':44s} {1e3 * sum(fwd) / a.i:8.3f} {1e3 * sum(bwd) / a.i:8.3f}",
              flush=True)
        del net


if __name__ == "__main__":
    main()

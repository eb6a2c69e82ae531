#!/usr/bin/python3
"""PyTorch beside bench_nn: the same AlexNet (torchvision's layout, built
by hand in torch.nn), CNN-F and MobileNetV2 (torchvision's, with our
256-128-K head; where torchvision is installed), the same
batch, inference images/s (eval, no_grad) and training-step images/s
(zero_grad, forward, backward of a random output gradient, Adam step), the
median of -i timed runs after one warm-up, on 2 threads.

  /usr/bin/python3 bench_torch_alexnet.py [-a alexnet,cnnf,mobilenet_v2] [-b 32] [-i 5] [-S 224]
                                          [-m fp32|bf16]

-m bf16 runs the forward passes under torch.autocast("cpu", torch.bfloat16)
(convolutions and linear layers in BF16, oneDNN's kernels), as bench_nn -m
bf16 runs ours.

For the fair figure run it with jemalloc as docs/measuring.md says:
  LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 \\
  MALLOC_CONF=oversize_threshold:0,dirty_decay_ms:-1,muzzy_decay_ms:-1 ..."""
import argparse
import statistics
import time

import torch
from torch import nn


def alexnet(k):
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(3, 2),
        nn.AdaptiveAvgPool2d((6, 6)), nn.Flatten(),
        nn.Dropout(), nn.Linear(9216, 4096), nn.ReLU(True),
        nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(True), nn.Linear(4096, k))


def cnnf(k, size):
    feat = nn.Sequential(
        nn.Conv2d(3, 64, 11, 4), nn.ReLU(True), nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 256, 5, padding=2), nn.ReLU(True), nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(3, 2), nn.Flatten())
    n = feat(torch.zeros(1, 3, size, size)).shape[1]
    return nn.Sequential(feat, nn.Linear(n, 4096), nn.ReLU(True), nn.Dropout(),
                         nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, k))


def mobilenet_v2(k):
    # torchvision's MobileNetV2 1.0 with the head of our mobilenet_v2
    # (gpu/arch.c): dense 256, 128, K after the 1280-d average pool. Keras's
    # stride-2 layers pad asymmetrically where torchvision pads 1 all round:
    # the same FLOPs to within a row.
    import torchvision
    m = torchvision.models.mobilenet_v2(num_classes=k)
    m.classifier = nn.Sequential(
        nn.Linear(1280, 256), nn.ReLU(True), nn.Dropout(0.5),
        nn.Linear(256, 128), nn.ReLU(True), nn.Dropout(0.25), nn.Linear(128, k))
    return m


def build(arch, size):
    if arch == "alexnet":
        return alexnet(100), 100
    if arch == "mobilenet_v2":
        return mobilenet_v2(100), 100
    return cnnf(50, size), 50


def timed(fn, iters):
    fn()
    t = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return statistics.median(t)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("-a", default="alexnet,cnnf")
    p.add_argument("-b", type=int, default=32)
    p.add_argument("-i", type=int, default=5)
    p.add_argument("-S", type=int, default=224)
    p.add_argument("-m", default="fp32", choices=["fp32", "bf16"])
    a = p.parse_args()
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {a.m}")
    cast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.m == "bf16")
    for arch in a.a.split(","):
        m, k = build(arch, a.S)
        x = torch.randn(a.b, 3, a.S, a.S)
        m.eval()

        def infer():
            with torch.no_grad(), cast:
                m(x)
        inf = timed(infer, a.i)
        m.train()
        opt = torch.optim.Adam(m.parameters(), lr=1e-4, weight_decay=1e-4)
        dy = torch.randn(a.b, k) * 1e-3

        def step():
            opt.zero_grad()
            with cast:
                y = m(x)
            y.float().backward(dy)
            opt.step()
        tr = timed(step, a.i)
        print(f"{arch:8s} {a.S:4d}  batch {a.b:4d}  inference {a.b / inf:7.1f} img/s  "
              f"train step {a.b / tr:7.1f} img/s   (torch)")


if __name__ == "__main__":
    main()

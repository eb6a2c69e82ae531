#!/usr/bin/env python3
"""PyTorch + cuDNN doing featured's side of a DVBPR step, beside
nn_cuda_dvbpr (tests/gpu/cuda/dvbpr.c) on the same card in the same call:
the same AlexNet (bench_torch_alexnet.py's torch.nn definition) with K
outputs, N Wikimedia-shaped items' uint8 HWC images of S x S, t triples a
step drawn uniformly, θ_u and the non-visual margin random, Adam(lr=1e-3,
weight_decay=1e-4), torch.backends.cudnn.benchmark = True. One step:

  gather the 2t images [i..., j...] and normalise them on the GPU, forward
  (training mode), x_uij = margin + θ_u·(φ_i − φ_j), loss = Σ −ln σ(x_uij)
  (the tutorial's SUM), g = σ(−x) and dθ = −g (φ_i − φ_j) to the host in
  one copy (what featured replies with; it waits for the forward), then
  zero_grad, backward, Adam step (queued; the next step overlaps them)

with the image cache in one of two places (-c):
  host  pinned host memory, gathered on the CPU into a pinned buffer and
        copied (non_blocking): what nn_cuda_dvbpr and featured do
  dev   on the GPU (1.45 GB at the defaults), gathered there: PyTorch at
        its best, no images over the bus
Per math mode (fp32: TF32 off in cuDNN and matmuls; tf32: on; bf16: AMP,
torch.autocast to bfloat16 around the forward, with the model and its
input in channels_last, TF32 on for what stays FP32, the loss in FP32 on
phi.float(): PyTorch's fastest training recipe for convnets on tensor
cores; bf16-nchw: the same without channels_last) and cache place, step_ms is the wall time per step over -s steps back to back after
three warm-ups, one synchronize at the end.

  python3 bench_torch_dvbpr.py [-k 100] [-S 224] [-N 9633] [-t 128] [-s 60]
      [-m fp32,tf32,bf16] [-c dev,host] [-E 5000000] [-e 5]

Prints readable lines and "RESULT torch dvbpr alexnet <mode>[-<cache>]
<metric> <value>" (the host cache is the plain mode name, as ours). Exits
77 when PyTorch sees no CUDA device. -d cpu runs the same on the CPU (to
check this script without a GPU; use small sizes)."""
import argparse
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_torch_alexnet import alexnet  # noqa: E402

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
USERS = 2048


def bench(mode, where, a, dev, cache_host, theta_users):
    t, k = a.t, a.k
    amp, cl = mode.startswith("bf16"), mode == "bf16"
    m = alexnet(k).to(dev).train()
    if cl:
        m = m.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3, weight_decay=1e-4)
    mean = torch.tensor(MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=dev).view(1, 3, 1, 1)
    pin = dev.type == "cuda"
    cache = cache_host.to(dev) if where == "dev" else cache_host
    buf = torch.empty((2 * t,) + tuple(cache_host.shape[1:]), dtype=torch.uint8,
                      pin_memory=pin)
    gen = torch.Generator().manual_seed(3)
    losses = []

    def step():
        i = torch.randint(0, a.N, (t,), generator=gen)
        j = (i + torch.randint(1, a.N, (t,), generator=gen)) % a.N
        idx = torch.cat([i, j])
        u = torch.randint(0, USERS, (t,), generator=gen)
        theta = theta_users[u].to(dev, non_blocking=pin)
        margin = (torch.rand(t, generator=gen) * 2 - 1).to(dev, non_blocking=pin)
        if where == "dev":
            x8 = cache[idx.to(dev, non_blocking=pin)]
        else:
            torch.index_select(cache, 0, idx, out=buf)
            x8 = buf.to(dev, non_blocking=pin)
        x = (x8.permute(0, 3, 1, 2).float() / 255.0 - mean) / std
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            phi = m(x)
        phi = phi.float()
        diff = phi[:t] - phi[t:]
        xuij = margin + (theta * diff).sum(1)
        loss = -F.logsigmoid(xuij).sum()
        with torch.no_grad():
            g = torch.sigmoid(-xuij)
            reply = torch.cat([-F.logsigmoid(xuij), g, (-g[:, None] * diff).flatten()]).cpu()
        losses.append(float(reply[:t].mean()))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    for _ in range(3):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(a.s):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    step_s = (time.perf_counter() - t0) / a.s
    if not all(math.isfinite(v) for v in losses):
        print(f"bench_torch_dvbpr: a loss is not finite: {losses}")
        sys.exit(1)
    epoch_steps = math.ceil(a.E / t)
    epoch_s = epoch_steps * step_s
    tag = mode if where == "host" else f"{mode}-dev"
    print(f"alexnet {mode}, cache on {where}: K={k}, {t} triples a step ({2 * t} images at "
          f"{a.S}x{a.S}), warm-up {warm:.2f} s")
    print(f"  step {1e3 * step_s:.2f} ms back to back ({t / step_s:.0f} triples/s, "
          f"{2 * t / step_s:.0f} images/s); an epoch of {a.E:.0f} triples = {epoch_steps} "
          f"steps: {epoch_s:.1f} s; {a.e} epochs: {a.e * epoch_s / 60:.1f} min (mean loss per "
          f"triple: first step {losses[0]:.4f}, last {losses[-1]:.4f})")
    print(f"RESULT torch dvbpr alexnet {tag} step_ms {1e3 * step_s:.3f}")
    print(f"RESULT torch dvbpr alexnet {tag} epochs_min {a.e * epoch_s / 60:.2f}", flush=True)
    del m, opt, cache
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("-k", type=int, default=100)
    p.add_argument("-S", type=int, default=224)
    p.add_argument("-N", type=int, default=9633)
    p.add_argument("-t", type=int, default=128)
    p.add_argument("-s", type=int, default=60)
    p.add_argument("-m", default="fp32,tf32,bf16")
    p.add_argument("-c", default="dev,host")
    p.add_argument("-E", type=float, default=5e6)
    p.add_argument("-e", type=int, default=5)
    p.add_argument("-d", default="cuda")
    a = p.parse_args()
    dev = torch.device(a.d)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("bench_torch_dvbpr: SKIPPED: no CUDA device found (torch.cuda.is_available() is "
              "False)")
        sys.exit(77)
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
          f"{torch.backends.cudnn.version()}, {name}", flush=True)
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(5)
    cache = torch.randint(0, 256, (a.N, a.S, a.S, 3), dtype=torch.uint8, generator=gen)
    if dev.type == "cuda":
        cache = cache.pin_memory()
    theta_users = torch.rand(USERS, a.k, generator=gen) * 0.2 - 0.1
    if dev.type == "cuda":
        theta_users = theta_users.pin_memory()
    print(f"image cache: {a.N} items at {a.S}x{a.S}, {cache.numel() / 1e9:.2f} GB, made in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    for mode in a.m.split(","):
        if mode not in ("fp32", "tf32", "bf16", "bf16-nchw"):
            print(f"bench_torch_dvbpr: mode {mode}: not fp32, tf32, bf16 or bf16-nchw")
            sys.exit(2)
        tf32 = mode != "fp32"
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for where in a.c.split(","):
            bench(mode, where, a, dev, cache, theta_users)


if __name__ == "__main__":
    main()

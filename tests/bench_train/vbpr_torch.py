#!/usr/bin/python3
"""The peer of bench_train's VBPR step: one VBPR training step written in
PyTorch the way the IUI 2021 tutorial's models/vbpr.py and its training
notebook do it (embeddings, per-triple feature difference times E,
BCEWithLogitsLoss(reduction="sum"), Adam with weight decay), timed on a
Wikimedia-shaped problem: 1,079 users, 9,633 items, F = 2048, K = 200,
K' = 100, minibatch 42,000.

Triples are drawn before timing (uniform users and items), so the figure is
the step alone; the C benchmark's figure includes its sampler.

    vbpr_torch.py [--threads 2] [--batch 42000] [--seconds 6]

Prints one line per timed run and a median, "torch ... triples_per_s=X".
Run it at its best with jemalloc preloaded (see run_bench.sh)."""
import argparse
import statistics
import time

import torch
import torch.nn as nn


class VBPR(nn.Module):
    def __init__(self, n_users, n_items, features, k, k2):
        super().__init__()
        self.features = nn.Embedding.from_pretrained(features, freeze=True)
        self.gamma_users = nn.Embedding(n_users, k)
        self.gamma_items = nn.Embedding(n_items, k)
        self.theta_users = nn.Embedding(n_users, k2)
        self.embedding = nn.Embedding(features.size(1), k2)
        self.beta_items = nn.Embedding(n_items, 1)
        self.visual_bias = nn.Embedding(features.size(1), 1)
        for e in (self.gamma_users, self.gamma_items, self.theta_users, self.embedding,
                  self.beta_items, self.visual_bias):
            nn.init.xavier_uniform_(e.weight)

    def forward(self, u, i, j):
        diff_f = self.features(i) - self.features(j)
        diff_g = self.gamma_items(i) - self.gamma_items(j)
        x = (self.beta_items(i) - self.beta_items(j)
             + (self.gamma_users(u) * diff_g).sum(dim=1, keepdim=True)
             + (self.theta_users(u) * diff_f.mm(self.embedding.weight)).sum(dim=1, keepdim=True)
             + diff_f.mm(self.visual_bias.weight))
        return x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=42000)
    ap.add_argument("--seconds", type=float, default=6)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    n_users, n_items, f, k, k2 = 1079, 9633, 2048, 200, 100
    features = torch.clamp(torch.rand(n_items, f) - 0.5, min=0)
    model = VBPR(n_users, n_items, features, k, k2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    crit = nn.BCEWithLogitsLoss(reduction="sum")
    batches = [(torch.randint(n_users, (a.batch,)), torch.randint(n_items, (a.batch,)),
                torch.randint(n_items, (a.batch,))) for _ in range(4)]
    target = torch.ones(a.batch, 1)

    def step(b):
        opt.zero_grad()
        loss = crit(model(*b), target)
        loss.backward()
        opt.step()
        return loss.item()

    step(batches[0])  # warm-up: allocations, first touch
    runs = []
    for r in range(3):
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < a.seconds / 3:
            loss = step(batches[n % len(batches)])
            n += 1
        rate = n * a.batch / (time.perf_counter() - t0)
        runs.append(rate)
        print(f"torch threads={a.threads} batch={a.batch} run={r} loss={loss / a.batch:.4f} "
              f"triples_per_s={rate:.0f}", flush=True)
    print(f"torch threads={a.threads} median triples_per_s={statistics.median(runs):.0f}")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Offline VBPR: which item features rank cold items best.

    vbpr_coldstart.py DATA NAME=FEATURES.bin [NAME=FEATURES.bin ...]
        [--seeds 1,2,3] [--epochs 30] [--raw] [--expect-better A B]

DATA is a generated data set (visrec-datagen: interactions.csv,
truth_items.csv); each FEATURES.bin holds one row per item in
truth_items.csv order (vbpr_features: int32 n, int32 d, n x d float32).
NAME "none" needs no file: plain BPR, the floor.

Method (the same for every feature source, so only the features differ):
- split: each user's latest interaction is the test item, the rest train;
- features standardised per dimension over the items (zero mean, unit
  variance), then divided by sqrt(d), so sources of different scale and
  width start alike (--raw: as stored, which is what rankd trains on);
- VBPR (He & McAuley 2016): x_ui = b_i + g_u.g_i + t_u.(E f_i) + b'.f_i,
  K = 10, K' = 20, trained with BPR-OPT on uniform (user, positive, negative)
  triples, Adam (lr 0.01), L2 1e-4 on the sampled rows and on E and b',
  batches of 1024, EPOCHS passes over the training interactions;
- evaluation (the standard protocol): for each user, the AUC of the test
  item against every item the user did not train on; items with no
  training interaction (the cold ones) score by their visual terms only
  (b_i = 0, g_i = 0). "cold AUC" averages over users whose test item is
  cold, "AUC" over all users. Mean over the seeds, +- the standard error.

Prints a table; with --expect-better A B exits 1 unless A's cold AUC
beats B's (the regression check of tests/weights). Exits 77 without
PyTorch."""
import argparse
import csv
import math
import os
import struct
import sys

try:
    import numpy as np
    import torch
except ImportError as e:
    print(f"skipped: {e}")
    sys.exit(77)

K = 10
K_VIS = 20
LR = 0.01
L2 = 1e-4
BATCH = 1024


def load_data(d):
    items = [r["item"] for r in csv.DictReader(open(os.path.join(d, "truth_items.csv")))]
    index = {it: i for i, it in enumerate(items)}
    by_user = {}
    for r in csv.DictReader(open(os.path.join(d, "interactions.csv"))):
        by_user.setdefault(r["user"], []).append((int(r["timestamp"]), index[r["item"]]))
    train, test = [], []
    for u, rows in enumerate(by_user.values()):
        rows.sort()
        test.append(rows[-1][1])
        train.append(sorted({i for _, i in rows[:-1]}))
    return len(items), train, np.array(test)


def load_features(path, n_items, raw_scale):
    raw = open(path, "rb").read()
    n, d = struct.unpack("<ii", raw[:8])
    if n != n_items:
        raise SystemExit(f"{path}: {n} rows, the data set has {n_items} items")
    f = np.frombuffer(raw[8:], dtype=np.float32).reshape(n, d).astype(np.float64)
    if raw_scale:
        return torch.tensor(f, dtype=torch.float32)
    f -= f.mean(0)
    sd = f.std(0)
    f = np.where(sd > 0, f / np.where(sd > 0, sd, 1), 0.0) / math.sqrt(d)
    return torch.tensor(f, dtype=torch.float32)


def train_and_eval(n_items, train, test, feats, epochs, seed):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n_users = len(train)
    p = lambda *s: torch.nn.Parameter(0.01 * torch.randn(*s))
    beta, gu, gi = p(n_items), p(n_users, K), p(n_items, K)
    params = [beta, gu, gi]
    if feats is not None:
        tu, E, bv = p(n_users, K_VIS), p(feats.shape[1], K_VIS), p(feats.shape[1])
        params += [tu, E, bv]
    opt = torch.optim.Adam(params, lr=LR)
    seen = torch.zeros(n_users, n_items, dtype=torch.bool)
    for u, t in enumerate(train):
        seen[u, t] = True
    users_with = np.array([u for u in range(n_users) if train[u]])
    lens = np.array([len(t) for t in train])
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    flat = np.concatenate([np.asarray(t, dtype=np.int64) for t in train])
    n_train = sum(len(t) for t in train)

    def score(u, i):
        x = beta[i] + (gu[u] * gi[i]).sum(1)
        if feats is not None:
            f = feats[i]
            x = x + (tu[u] * (f @ E)).sum(1) + f @ bv
        return x

    for _ in range(epochs):
        for _ in range(max(1, n_train // BATCH)):
            u = rng.choice(users_with, BATCH)
            i = flat[starts[u] + (rng.random(BATCH) * lens[u]).astype(np.int64)]
            u, i = torch.from_numpy(u), torch.from_numpy(i)
            j = torch.from_numpy(rng.integers(n_items, size=BATCH))
            while True:                      # redraw negatives that are positives
                bad = seen[u, j]
                if not bad.any():
                    break
                j[bad] = torch.from_numpy(rng.integers(n_items, size=int(bad.sum())))
            loss = -torch.nn.functional.logsigmoid(score(u, i) - score(u, j)).sum()
            reg = gu[u].pow(2).sum() + gi[i].pow(2).sum() + gi[j].pow(2).sum() + \
                beta[i].pow(2).sum() + beta[j].pow(2).sum()
            if feats is not None:
                reg = reg + tu[u].pow(2).sum() + E.pow(2).sum() + bv.pow(2).sum()
            opt.zero_grad()
            (loss + L2 * reg).backward()
            opt.step()

    with torch.no_grad():
        warm = torch.zeros(n_items, dtype=torch.bool)
        for t in train:
            warm[t] = True
        b = torch.where(warm, beta, torch.zeros(()))
        g = torch.where(warm[:, None], gi, torch.zeros(()))
        s = b[None, :] + gu @ g.T
        if feats is not None:
            s = s + tu @ (feats @ E).T + (feats @ bv)[None, :]
        t = s[torch.arange(n_users), torch.from_numpy(test)][:, None]
        other = ~seen
        other[torch.arange(n_users), torch.from_numpy(test)] = False
        wins = ((s < t) & other).sum(1) + 0.5 * ((s == t) & other).sum(1)
        aucs = (wins / other.sum(1)).numpy()
        cold = ~warm.numpy()[test]
    return aucs[cold].mean(), aucs.mean(), int(cold.sum())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("sources", nargs="+", help="NAME=FEATURES.bin, or none")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--expect-better", nargs=2, metavar=("A", "B"))
    ap.add_argument("--raw", action="store_true",
                    help="use the features as stored (as rankd does), not standardised")
    a = ap.parse_args()
    torch.set_num_threads(2)
    n_items, train, test = load_data(a.data)
    seeds = [int(s) for s in a.seeds.split(",")]
    results = {}
    print(f"{len(train)} users, {n_items} items; {a.epochs} epochs, seeds {a.seeds}")
    print(f"{'features':<24} {'dims':>5} {'cold AUC':>16} {'AUC':>16}")
    for src in a.sources:
        name, _, path = src.partition("=")
        feats = load_features(path, n_items, a.raw) if path else None
        runs = np.array([train_and_eval(n_items, train, test, feats, a.epochs, s)[:2]
                         for s in seeds])
        mean = runs.mean(0)
        se = runs.std(0, ddof=1) / math.sqrt(len(seeds)) if len(seeds) > 1 else [0, 0]
        results[name] = mean[0]
        dims = feats.shape[1] if feats is not None else 0
        print(f"{name:<24} {dims:>5} {mean[0]:>9.4f} +-{se[0]:.4f} {mean[1]:>9.4f} +-{se[1]:.4f}",
              flush=True)
    if a.expect_better:
        x, y = a.expect_better
        if not results[x] > results[y]:
            print(f"FAIL: cold AUC of {x} ({results[x]:.4f}) does not beat {y} ({results[y]:.4f})")
            sys.exit(1)
        print(f"ok: cold AUC of {x} ({results[x]:.4f}) beats {y} ({results[y]:.4f})")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""PyTorch peer of bench_serve: top-20 over the same item matrix and users.

    torch_peer.py N_ITEMS DUMP_DIR [--queries Q] [--batch B]

Reads DUMP_DIR/items-N.f32, users-N.f32 and top20-N.u32 written by
`bench_serve N --dump DUMP_DIR`. Times, per single query, the IUI 2021
tutorial's VBPR recommend_all (with its cache: item bias, gamma_items, the
visual rating space E f_i and the visual bias as separate tensors; the
folded bias column of our matrix is its beta_i, its visual bias is zero)
followed by torch.topk, and the same scores as one matrix-vector product
(the folded form, PyTorch at its best); then many users at once (a matrix
product per block of users + topk). Prints the agreement of its top-20 with
bench_serve's exact top-20, and one JSON line. Run it as measuring.md says:
torch.set_num_threads(2) (here), jemalloc preloaded (run.sh).
"""
import json
import os
import sys
import time

import numpy as np
import torch

D = 301
K = 20



def jemalloc_loaded():
    """Whether jemalloc is mapped into this process: LD_PRELOAD naming it
    is not enough (ld.so ignores a file that is not there, with a warning
    only), and a figure labelled jemalloc must have run with it."""
    with open("/proc/self/maps") as f:
        return any("libjemalloc" in line for line in f)

def pct(v, p):
    v = sorted(v)
    return v[int(p * (len(v) - 1) + 0.5)]


def main():
    args = sys.argv[1:]
    n, d = int(args[0]), args[1]
    queries = 2000 if n <= 100000 else 20
    batch = 4096 if n <= 100000 else 256
    for i, a in enumerate(args):
        if a == "--queries":
            queries = int(args[i + 1])
        if a == "--batch":
            batch = int(args[i + 1])
    torch.set_num_threads(2)

    t0 = time.perf_counter()
    m = torch.from_numpy(np.fromfile(os.path.join(d, f"items-{n}.f32"), dtype=np.float32).reshape(n, D))
    users = torch.from_numpy(np.fromfile(os.path.join(d, f"users-{n}.f32"), dtype=np.float32).reshape(-1, D))
    ref = np.fromfile(os.path.join(d, f"top20-{n}.u32"), dtype=np.uint32).reshape(-1, K)
    # The tutorial's tensors (VBPR.generate_cache + embeddings).
    beta_items = m[:, 0:1].contiguous()
    gamma_items = m[:, 1:201].contiguous()
    visual_rating_space = m[:, 201:301].contiguous()
    opinion_visual_appearance = torch.zeros(n, 1)
    load_s = time.perf_counter() - t0

    def recommend_all(u):
        gamma_u = users[u:u + 1, 1:201]
        theta_u = users[u:u + 1, 201:301]
        return (beta_items
                + (gamma_u * gamma_items).sum(dim=1).unsqueeze(-1)
                + (theta_u * visual_rating_space).sum(dim=1).unsqueeze(-1)
                + opinion_visual_appearance)

    def folded(u):
        return torch.mv(m, users[u])

    res = {"impl": "pytorch", "items": n, "threads": torch.get_num_threads(),
           "jemalloc": jemalloc_loaded()}
    agree = {}
    with torch.no_grad():
        for name, fn in (("tutorial", recommend_all), ("folded", folded)):
            lat, found = [], 0
            for q in range(queries + 2):
                u = q if q < 2 else q - 2
                a = time.perf_counter()
                top = torch.topk(fn(u).reshape(-1), K)
                b = time.perf_counter()
                if q < 2:
                    continue
                lat.append((b - a) * 1e3)
                found += len(set(top.indices.tolist()) & set(ref[u].tolist()))
            res[f"{name}_p50_ms"] = round(pct(lat, 0.5), 4)
            res[f"{name}_p99_ms"] = round(pct(lat, 0.99), 4)
            agree[name] = found / (queries * K)

        blk = max(1, min(batch, (256 << 20) // (4 * n)))
        ub = users[:batch]
        bts = []
        for rep in range(4):  # the first warms up allocator and threads
            a = time.perf_counter()
            for s in range(0, batch, blk):
                torch.topk(ub[s:s + blk] @ m.T, K, dim=1)
            bts.append(time.perf_counter() - a)
        bt = pct(bts[1:], 0.5)
        res["batch_users"] = batch
        res["batch_users_per_s"] = round(batch / bt, 1)
    res["load_s"] = round(load_s, 3)
    print(f"pytorch {torch.__version__}, {res['threads']} threads, jemalloc {res['jemalloc']}, items {n}")
    for name in ("tutorial", "folded"):
        print(f"top-{K} single query, {name} recommend_all + topk: p50 {res[name + '_p50_ms']:.3f} ms  "
              f"p99 {res[name + '_p99_ms']:.3f} ms  (agreement with bench_serve exact top-20: {agree[name]:.4f})")
    print(f"batched (matmul per {blk} users + topk), {batch} users: {bt:.3f} s (median of 3), {batch / bt:.0f} users/s")
    print(json.dumps(res))


if __name__ == "__main__":
    main()

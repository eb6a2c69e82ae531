#!/usr/bin/env python3
"""What a generated data set allows: AUC ceilings from its truth files.

    tools/datagen_ceilings.py DATA_DIR

DATA_DIR is a `visrec datagen` output (interactions.csv, truth_items.csv,
truth_users.csv; run.sh's OUT/data has them). The split and the rule are
Evaluate's: each user's latest interaction is the test item, ranked against
every item the user has no training interaction with (the standard
protocol), ties counting half. Subsets: all users, warm (test item with
training interactions, ranked among the warm items only), cold (without),
and "new" (the cold users' item among the cold items only), as Evaluate's.
Each scorer knows something a model cannot:

  truth               the generator's own log-odds: log popularity + visual
                      affinity + latent affinity (meta.json's model)
  truth, no visual    the same without the visual terms
  truth, no latent    the same without the latent terms
  new items first     every cold item above every warm one, then the
                      truth's visual affinity: what the cold AUC rewards
  counted taste       training popularity + each user's taste for the
                      items' true category, hue and texture, counted from
                      their own training items (smoothed): what a model
                      with perfect attribute features could learn
  popularity          training interaction counts

A model's figures from Evaluate are comparable row by row (DVBPR reaching
"counted taste" among new items would see as well as the attributes allow).
Needs numpy."""
import csv
import json
import os
import sys

import numpy as np


def load(d):
    items = list(csv.DictReader(open(os.path.join(d, "truth_items.csv"))))
    users = list(csv.DictReader(open(os.path.join(d, "truth_users.csv"))))
    iid = {r["item"]: k for k, r in enumerate(items)}
    uid = {r["user"]: k for k, r in enumerate(users)}
    col = lambda rows, name, t=float: np.array([t(r[name]) for r in rows])
    cols = lambda rows, prefix, n: np.array([[float(r[f"{prefix}{k}"]) for k in range(n)] for r in rows])
    it = {"cold": col(items, "cold", int), "cat": col(items, "category", int),
          "hue": col(items, "hue", int), "tex": col(items, "texture", int),
          "pop": col(items, "popularity"), "l": cols(items, "l", 8)}
    us = {"vc": cols(users, "vc", 10), "vh": cols(users, "vh", 8), "vt": cols(users, "vt", 3),
          "l": cols(users, "l", 8)}
    hist = [[] for _ in users]
    for r in csv.DictReader(open(os.path.join(d, "interactions.csv"))):
        hist[uid[r["user"]]].append((int(r["timestamp"]), iid[r["item"]]))
    return it, us, hist


def main():
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(sys.argv) == 2 else 2
    d = sys.argv[1]
    try:
        it, us, hist = load(d)
        beta_l = json.load(open(os.path.join(d, "meta.json")))["model"]["beta_latent"]
    except (OSError, KeyError, ValueError) as e:
        print(f"datagen_ceilings: {d} is not a datagen output with truth files: {e}", file=sys.stderr)
        return 1
    n_items = len(it["pop"])
    test, train = [], []
    counts = np.zeros(n_items)
    for h in hist:
        h.sort()
        test.append(h[-1][1] if len(h) >= 2 else -1)
        train.append([i for _, i in h[:-1]] if len(h) >= 2 else [i for _, i in h])
        for i in train[-1]:
            counts[i] += 1
    cold = it["cold"] == 1
    cold_idx = np.where(cold)[0]
    logpop = np.log(it["pop"])
    trainpop = np.log(counts + 1)

    def visual(u):
        return us["vc"][u][it["cat"]] + us["vh"][u][it["hue"]] + us["vt"][u][it["tex"]]

    # Counted taste: smoothed log ratio of the user's attribute shares to
    # the interaction-weighted catalogue's.
    share = lambda a, n: np.bincount(a, weights=counts, minlength=n) / counts.sum()
    base = {"cat": share(it["cat"], 10), "hue": share(it["hue"], 8), "tex": share(it["tex"], 3)}

    def counted(u):
        s = trainpop.copy()
        tr = train[u]
        for a, n in (("cat", 10), ("hue", 8), ("tex", 3)):
            c = np.bincount(it[a][tr], minlength=n)
            w = np.log((c + n * base[a]) / (len(tr) + n) / base[a])
            s += 0.5 * w[it[a]]
        return s

    scorers = [
        ("truth", lambda u: logpop + visual(u) + beta_l * it["l"] @ us["l"][u]),
        ("truth, no visual", lambda u: logpop + beta_l * it["l"] @ us["l"][u]),
        ("truth, no latent", lambda u: logpop + visual(u)),
        ("new items first", lambda u: np.where(cold, 100.0, 0.0) + visual(u)),
        ("counted taste", counted),
        ("popularity", lambda u: trainpop),
    ]

    def auc(s, t, neg_mask):
        neg = s[neg_mask]
        return ((neg < s[t]).sum() + 0.5 * (neg == s[t]).sum()) / max(len(neg), 1)

    print(f"{'scorer':18s} {'all':>6s} {'warm':>6s} {'cold':>6s} {'new':>6s}")
    for name, fn in scorers:
        res = {"all": [], "warm": [], "cold": [], "new": []}
        for u in range(len(hist)):
            t = test[u]
            if t < 0:
                continue
            s = fn(u)
            mask = np.ones(n_items, bool)
            mask[train[u]] = False
            mask[t] = False
            a = auc(s, t, mask)
            res["all"].append(a)
            if not cold[t]:
                res["warm"].append(auc(s, t, mask & ~cold))
            else:
                res["cold"].append(a)
                m = np.zeros(n_items, bool)
                m[cold_idx] = True
                m[t] = False
                res["new"].append(auc(s, t, m))
        row = " ".join(f"{np.mean(v):6.3f}" if v else "     -" for v in res.values())
        print(f"{name:18s} {row}")
    print(f"users {sum(1 for t in test if t >= 0)}: warm {len(res['warm'])}, cold {len(res['cold'])}; "
          f"cold items {len(cold_idx)} of {n_items}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

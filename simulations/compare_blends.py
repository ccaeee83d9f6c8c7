"""Compare hybrid designs on validation only, honestly: per shop, 2-fold over the validation
users (each design chooses its settings on one half and is scored on the other; both ways,
averaged), macro over shops. The test split is never read.

    python simulations/compare_blends.py runs/synthetic

Designs: EASE alone (λ chosen), the global model alone, the shipped hybrid (λ for EASE alone,
then α), λ and α chosen jointly, a three-way blend with item-kNN, a three-way blend with
popularity, a rank-based blend, and one α for every shop.
"""

import argparse
import itertools
import json

import numpy as np
import torch

from fedgraph.baselines.methods import EASE_L2, shop_matrix
from fedgraph.evaluation import model_scores, popularity_scores
from fedgraph.federation.run_dir import RunDir
from fedgraph.federation.shop_side import model_for_shop
from fedgraph.metrics import ndcg_at_k, top_k_items
from fedgraph.models.ease import EASE
from fedgraph.models.hybrid import standardise
from fedgraph.models.itemknn import ItemKNN
from fedgraph.shop import ShopData

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("run", help="a finished simulation's run directory (its selection.json names the kept round)")
parser.add_argument("-k", type=int, default=20, help="NDCG cut-off (default 20)")
args = parser.parse_args()
run = RunDir.at(args.run)
K = args.k
sel = json.load(open(run.path / "selection.json"))
best = sel["round"]
state = run.load_checkpoint(best)["state_dict"]


def per_user(val, users, scores):
    rel = [val.test_items(u) for u in users]
    exc = [val.history(u) for u in users]
    return ndcg_at_k(top_k_items(scores, K, exc), rel, K)


def rankn(s):
    r = s.argsort(dim=1).argsort(dim=1).float()
    return r / s.shape[1]


results = {}
shops = run.shop_names
for name in shops:
    val = ShopData.load(run.shop_file(name))
    users = val.evaluable_users()
    if len(users) < 2:
        continue
    model = model_for_shop(run, val, state, server_round=best)
    g = model_scores(model, val, users, history=run.config.evaluation.history, device="cpu")
    X = shop_matrix(val)
    rows = X[users]
    ease = {l: EASE(l).fit(X).scores(rows) for l in EASE_L2}
    knn = {n: ItemKNN(n).fit(X).scores(rows) for n in (10, 50, 200)}
    pop = torch.as_tensor(popularity_scores(val), dtype=torch.float32).expand(len(users), -1)
    # candidate score matrices -> per-user ndcg
    cands = {}
    G, P = standardise(g), standardise(pop)
    for l, e in ease.items():
        E = standardise(e)
        for a in np.linspace(0, 1, 11):
            cands[("ge", l, round(a, 2))] = per_user(val, users, a * G + (1 - a) * E)
        for n, kn in knn.items():
            Kn = standardise(kn.float())
            for a, b in itertools.product(np.linspace(0, 1, 6), repeat=2):
                if a + b <= 1.0001:
                    cands[("gek", l, n, round(a, 2), round(b, 2))] = per_user(val, users, a * G + b * Kn + (1 - a - b) * E)
        for a, b in itertools.product(np.linspace(0, 1, 6), repeat=2):
            if a + b <= 1.0001:
                cands[("gep", l, round(a, 2), round(b, 2))] = per_user(val, users, a * G + b * P + (1 - a - b) * E)
        R = rankn(e)
        RG = rankn(g)
        for a in np.linspace(0, 1, 11):
            cands[("rank", l, round(a, 2))] = per_user(val, users, a * RG + (1 - a) * R)
    results[name] = (len(users), cands)
    print(name, len(users), flush=True)


def design(filter_fn, pick="per_shop"):
    """2-fold: choose per shop the best candidate on half A (mean ndcg), score on B."""
    outs = []
    for n, cands in results.values():
        keys = [k for k in cands if filter_fn(k)]
        perm = np.random.default_rng(1).permutation(n)
        halves = [perm[: n // 2], perm[n // 2 :]]
        sc = []
        for a, b in ((0, 1), (1, 0)):
            kbest = max(keys, key=lambda k: cands[k][halves[a]].mean())
            sc.append(cands[kbest][halves[b]].mean())
        outs.append(np.mean(sc))
    return float(np.mean(outs))


def design_ease_first(alpha_filter):
    outs = []
    for n, cands in results.values():
        perm = np.random.default_rng(1).permutation(n)
        halves = [perm[: n // 2], perm[n // 2 :]]
        sc = []
        for a, b in ((0, 1), (1, 0)):
            l = max(EASE_L2, key=lambda l: cands[("ge", l, 0.0)][halves[a]].mean())
            keys = [k for k in cands if k[0] == "ge" and k[1] == l]
            kbest = max(keys, key=lambda k: (cands[k][halves[a]].mean(), k[2]))
            sc.append(cands[kbest][halves[b]].mean())
        outs.append(np.mean(sc))
    return float(np.mean(outs))


print("EASE alone (lambda on A):", design(lambda k: k[0] == "ge" and k[2] == 0.0))
print("global alone:", design(lambda k: k[0] == "ge" and k[2] == 1.0 and k[1] == 100.0))
print("D0 current (lambda for EASE, then alpha):", design_ease_first(None))
print("D1 joint lambda x alpha:", design(lambda k: k[0] == "ge"))
print("D2 + itemknn:", design(lambda k: k[0] in ("ge", "gek")))
print("D4 + popularity:", design(lambda k: k[0] in ("ge", "gep")))
print("D3 rank blend:", design(lambda k: k[0] == "rank"))
# global alpha shared across shops
for a in (0.3, 0.4, 0.5, 0.6):
    print(f"fixed alpha {a}, lambda per shop:", design(lambda k, a=a: k[0] == "ge" and abs(k[2] - a) < 1e-6))

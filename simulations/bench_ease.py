"""EASE's cost at catalog sizes a shop may have: fit time and peak memory.

    python simulations/bench_ease.py --items 2000,8000,20000 --users 5000

Random shop logs (each user 5-60 distinct items, item popularity Zipf-like), all items active,
EASE with its default cap of 10,000 active items (``--max-items`` to change). Prints, per
catalog size: active items kept, seconds to fit (Gram matrix + inverse), seconds to score all
users, and the process's peak RSS growth (each size runs in a fresh process).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one(items: int, users: int, max_items: int, seed: int) -> dict:
    import numpy as np
    import torch

    from fedgraph.models.ease import EASE, interaction_matrix

    torch.set_num_threads(2)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 61, size=users)
    weights = 1.0 / np.arange(1, items + 1) ** 0.8
    weights /= weights.sum()
    rows = [np.unique(rng.choice(items, size=n, p=weights)) for n in lengths]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    matrix = interaction_matrix(indptr, np.concatenate(rows), items)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    model = EASE(100.0, max_items=max_items).fit(matrix)
    fit = time.perf_counter() - started
    started = time.perf_counter()
    model.scores(matrix)
    score = time.perf_counter() - started
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    return {"items": items, "active": int(len(model.active)), "fit_s": fit, "score_s": score, "rss_growth_mb": grown}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", default="2000,8000,20000", help="catalog sizes, comma-separated")
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--max-items", type=int, default=10000, help="EASE's cap on active items")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:
        print(json.dumps(one(args.one, args.users, args.max_items, args.seed)))
        return 0
    print(f"{'items':>7} {'active':>7} {'fit s':>7} {'score s':>8} {'RSS growth MB':>14}")
    for items in (int(x) for x in args.items.split(",")):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                str(items),
                "--users",
                str(args.users),
                "--max-items",
                str(args.max_items),
                "--seed",
                str(args.seed),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{r['items']:>7} {r['active']:>7} {r['fit_s']:>7.1f} {r['score_s']:>8.2f} {r['rss_growth_mb']:>14.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Are the explanations faithful? (``fedgraph graph RUN explain``, issue 14.1)

On a finished simulation run, for up to ``--users`` customers per shop with at least 3 history
items and a held-out (test) item, the first held-out item is explained
(:func:`fedgraph.graph.explain.history_effects`) and the history item with the largest
*contribution* is removed: how much does the held-out item's score fall, against removing a
random other history item (the same customers, a seeded draw)? The same for the item with the
largest attention weight. Prints one Markdown table (macro over customers of all shops).

    python simulations/bench_explain.py runs/default
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from fedgraph.graph import GraphStore
    from fedgraph.graph.explain import history_effects
    from fedgraph.graph.serving import open_served_shop

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a finished simulation run directory")
    parser.add_argument("--users", type=int, default=200, help="customers per shop (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    with GraphStore(Path(args.run) / "graph.sqlite", create=False) as store:
        shops = store.shops()
    drops = {"contribution": [], "attention": [], "random": []}
    for shop in shops:
        served = open_served_shop(args.run, shop)
        data = served.data
        users = [u for u in data.evaluable_users() if len(data.history(u)) >= 3]
        for u in rng.permutation(users)[: args.users]:
            _, rows = history_effects(served, int(u), int(data.test_items(u)[0]))
            best = int(np.argmax(rows[:, 1]))
            drops["contribution"].append(rows[best, 2])
            drops["attention"].append(rows[int(np.argmax(rows[:, 0])), 2])
            drops["random"].append(rows[int(rng.choice([j for j in range(len(rows)) if j != best])), 2])
    n = len(drops["random"])
    print(f"{n} customers over {len(shops)} shops; score fall of their first held-out item when one history item is removed")
    print("| history item removed | mean score fall | share of customers where it falls more than for a random item |")
    print("|---|---|---|")
    rand = np.asarray(drops["random"])
    for key in ("contribution", "attention", "random"):
        values = np.asarray(drops[key])
        beats = "" if key == "random" else f"{np.mean(values > rand):.0%}"
        print(f"| top by {key} |" if key != "random" else "| a random other item |", f"{values.mean():.4f} | {beats} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

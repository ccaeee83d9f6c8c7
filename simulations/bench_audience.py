"""Benchmark and check of marketing audiences (``fedgraph graph RUN audience``).

Two parts, each printing a Markdown table:

* ``--users N,...``: time on synthetic shops of N customers (one shop of the synthetic
  generator, ``--items`` items, MiniLM text, the default model with its initial weights; the
  weights do not change the cost): a topic audience (every customer embedded and scored), an
  interest audience from a graph store written for the same shop (one SQL range scan), and
  the graph build + write that the interest query needs beforehand (done once per model, not
  per query).
* ``--run RUN_DIR`` (a finished simulation): is the topic audience about the topic? For every
  shop and every interest with at least ``--min-buyers`` customers whose *held-out* (test) items
  include an item of it, the interest's name is used as a free-text topic; the lift is the share
  of the topic audience's top ``--share`` of customers with such a held-out item, over the share
  among all customers (1.0 = no better than random). The same for the interest-edge audience.
  Reported as the median over (shop, interest) pairs.

    python simulations/bench_audience.py --users 10000,100000
    python simulations/bench_audience.py --run runs/default
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timing(users: int, items: int) -> dict:
    import torch

    from fedgraph.config import RunConfig
    from fedgraph.data.synthetic import generate_federation
    from fedgraph.features import pipeline
    from fedgraph.graph import GraphStore, build_interest_graph
    from fedgraph.graph.audience import interest_audience, topic_audience
    from fedgraph.graph.serving import ServedShop
    from fedgraph.models import InterestModel

    config = RunConfig()
    fed = generate_federation(1, seed=0, users_per_shop=(users, users), items_per_shop=(items, items))
    shop = str(fed.catalog["shop"].iloc[0])
    text, _ = pipeline.text_vectors(fed.catalog, config, progress=False)
    features = pipeline.shop_item_features(text, fed.catalog["price"].to_numpy(), config)
    history, held_out = pipeline.split_events(fed.events, config)
    data = pipeline.shop_data(shop, history, held_out, fed.catalog, features, config)
    torch.manual_seed(0)
    model = InterestModel.from_config(config.model, in_features=features.shape[1], text_dim=text.shape[1]).eval()
    served = ServedShop(shop, data, model, config, 0, config.evaluation.history)
    t0 = time.perf_counter()
    topic_audience(served, "garden decoration", top=1000)
    topic_s = time.perf_counter() - t0
    from fedgraph.evaluation import item_embeddings

    t0 = time.perf_counter()
    with torch.no_grad():
        item = item_embeddings(model, data)
        user = served.user_embeddings()
    graph = build_interest_graph(
        shop,
        list(data.users),
        (user / model.temperature).numpy(),
        list(data.items),
        item[:, :-1].numpy(),
        list(data.item_titles),
        list(data.item_categories),
        exclude=[data.history(u) for u in range(data.num_users)],
        item_bias=item[:, -1].numpy(),
    )
    with tempfile.TemporaryDirectory() as tmp:
        store = GraphStore(Path(tmp) / "graph.sqlite")
        store.write(graph)
        build_s = time.perf_counter() - t0
        interest = store.interests(shop)[0]
        t0 = time.perf_counter()
        interest_audience(store, shop, interest, top=1000)
        interest_s = time.perf_counter() - t0
        store.close()
    return {
        "users": data.num_users,
        "items": data.num_items,
        "topic_s": topic_s,
        "interest_s": interest_s,
        "build_s": build_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def lift(run: str, min_buyers: int, share: float) -> list[dict]:
    from fedgraph.graph import GraphStore
    from fedgraph.graph.audience import interest_audience, topic_audience
    from fedgraph.graph.serving import open_served_shop

    rows = []
    store = GraphStore(Path(run) / "graph.sqlite", create=False)
    for shop in store.shops():
        served = open_served_shop(run, shop)
        data = served.data
        categories = np.asarray(data.item_categories)
        n = data.num_users
        top = max(1, int(round(share * n)))
        for interest in store.interests(shop):
            buyers = {str(data.users[u]) for u in range(n) if (categories[data.test_items(u)] == interest).any()}
            if len(buyers) < min_buyers:
                continue
            base = len(buyers) / n
            topic = topic_audience(served, interest, top=top)
            by_topic = np.mean([m.user in buyers for m in topic.members])
            edges = interest_audience(store, shop, interest, top=top)
            by_edge = np.mean([m.user in buyers for m in edges.members]) if edges.members else float("nan")
            rows.append({"shop": shop, "interest": interest, "base": base, "topic": by_topic / base, "edge": by_edge / base})
    store.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", default="", help="comma-separated shop sizes to time, e.g. 10000,100000")
    parser.add_argument("--items", type=int, default=2000, help="items per synthetic shop (default 2000)")
    parser.add_argument("--run", help="a finished simulation run directory for the lift check")
    parser.add_argument("--min-buyers", type=int, default=20, help="interests with at least this many held-out buyers (default 20)")
    parser.add_argument("--share", type=float, default=0.1, help="audience size as a share of the shop's customers (default 0.1)")
    args = parser.parse_args()
    if args.users:
        print("| customers | items | topic audience s | interest audience s | graph build + write s (once per model) | peak RSS MB |")
        print("|---|---|---|---|---|---|")
        for users in (int(u) for u in args.users.split(",")):
            r = timing(users, args.items)
            print(
                f"| {r['users']:,} | {r['items']:,} | {r['topic_s']:.2f} | {r['interest_s']:.3f} | {r['build_s']:.1f} | {r['peak_rss_mb']:.0f} |",
                flush=True,
            )
    if args.run:
        rows = lift(args.run, args.min_buyers, args.share)
        if not rows:
            print("no (shop, interest) pair with enough held-out buyers")
            return 1
        print(
            f"\n{len(rows)} (shop, interest) pairs with >= {args.min_buyers} held-out buyers; audience = top {args.share:.0%} of customers"
        )
        print("| audience | median lift | share of pairs with lift > 1 |\n|---|---|---|")
        for key, name in (("topic", "free-text topic (the interest's name), model score"), ("edge", "interest edges of the graph")):
            values = np.array([r[key] for r in rows], dtype=float)
            values = values[np.isfinite(values)]
            print(f"| {name} | {np.median(values):.2f} | {np.mean(values > 1):.0%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

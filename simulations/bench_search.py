"""Benchmark: do search queries help customers with short purchase histories? (issue 14.4)

Runs ``fedgraph simulate`` twice on one synthetic federation with planted search queries
(``data.synthetic_searches_per_user``: each customer searches a Poisson number of times, each
query in the words of one of its planted interests, e.g. "oak cutting board"): once using them
(``model.search_queries=16``) and once not (``model.search_queries=0``). Same data, split, seed
and settings otherwise; the federated model alone (``model.shop_private=none``: the queries act
on the transferable model's content term, not on a shop's EASE). For the round each run kept on
validation it reports test NDCG@20 and Recall@20 per customer, macro over customers, by the
customer's number of distinct training items, and the same for the training-free content
baseline (which uses the queries too when they are on). Queries typed during or after a
customer's held-out period are never used (:func:`fedgraph.features.pipeline.before_held_out`).

    python simulations/bench_search.py                      # 10 shops, 3 searches a customer
    python simulations/bench_search.py --shops 20 --searches 1 --rounds 8
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import machine, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUCKETS = ((1, 2), (3, 5), (6, 10), (11, 10**9))


def simulate(args: argparse.Namespace, queries: int) -> Path:
    out = Path(args.out) / f"queries-{queries}"
    if out.exists():
        shutil.rmtree(out)
    overrides = [
        "data.source=synthetic",
        f"data.synthetic_shops={args.shops}",
        f"data.synthetic_users_per_shop=[{args.users_per_shop}]",
        f"data.synthetic_items_per_shop=[{args.items_per_shop}]",
        f"data.synthetic_searches_per_user={args.searches}",
        f"data.synthetic_events_per_user=[{args.events_per_user}]",
        f"data.min_user_items={args.min_user_items}",
        f"model.search_queries={queries}",
        "model.shop_private=none",
        f"train.rounds={args.rounds}",
        "evaluation.baselines=[]",
        f"features.cache_dir={args.cache_dir}",
        *args.set,
    ]
    log = out.with_suffix(".log")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        code = subprocess.run(
            [sys.executable, "-m", "fedgraph.cli", "simulate", "--out", str(out), *overrides],
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        ).returncode
    if code != 0:
        raise SystemExit(f"fedgraph simulate failed (exit {code}); see {log}")
    return out


def per_customer(run: Path, k: int) -> dict[str, np.ndarray]:
    """Test NDCG@k / Recall@k of the kept model and of the content baseline, one value per
    evaluable customer of every shop, with the customer's training-item count and query count."""
    from fedgraph.evaluation import content_scores, model_scores
    from fedgraph.graph.serving import open_served_shop
    from fedgraph.metrics import ndcg_at_k, recall_at_k, top_k_items

    shops = json.loads((run / "shops" / "index.json").read_text())["shops"]
    parts: dict[str, list[np.ndarray]] = {key: [] for key in ("items", "queries", "ndcg", "recall", "content_ndcg", "content_recall")}
    for shop in shops:
        served = open_served_shop(run, shop)
        data, users = served.data, served.data.evaluable_users()
        if not len(users):
            continue
        relevant, exclude = [data.test_items(u) for u in users], [data.history(u) for u in users]
        for prefix, scores in (
            ("", model_scores(served.model, data, users, history=served.history)),
            ("content_", content_scores(data, users, history=served.history)),
        ):
            ranked = top_k_items(scores, k, exclude)
            parts[prefix + "ndcg"].append(ndcg_at_k(ranked, relevant, k))
            parts[prefix + "recall"].append(recall_at_k(ranked, relevant, k))
        parts["items"].append(np.diff(data.indptr)[users])
        parts["queries"].append(np.diff(data.query_indptr)[users])
    return {key: np.concatenate(v) for key, v in parts.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shops", type=int, default=10, help="synthetic shops (default %(default)s)")
    p.add_argument("--users-per-shop", default="50,300", help="customers per shop, log-uniform range (default %(default)s)")
    p.add_argument("--items-per-shop", default="50,300", help="items per shop, log-uniform range (default %(default)s)")
    p.add_argument(
        "--events-per-user", default="2,30", help="events per customer, log-uniform range (default %(default)s: many short histories)"
    )
    p.add_argument(
        "--min-user-items",
        type=int,
        default=2,
        help="data.min_user_items: distinct items a customer needs to be held out (default %(default)s)",
    )
    p.add_argument("--searches", type=float, default=3.0, help="planted searches per customer, Poisson mean (default %(default)s)")
    p.add_argument("--rounds", type=int, default=6, help="federated rounds (default %(default)s)")
    p.add_argument("--k", type=int, default=20, help="cut-off of NDCG@k / Recall@k (default %(default)s)")
    p.add_argument("--set", action="append", default=[], metavar="section.key=value", help="extra config override (repeatable)")
    p.add_argument("--cache-dir", default=str(ROOT / "runs" / "bench-cache" / "text"), help="item text cache (default %(default)s)")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench-search"), help="where the two run directories go (default %(default)s)")
    args = p.parse_args()
    print(f"# search-query benchmark — {machine()}; {args.shops} shops, {args.searches:g} searches a customer, {args.rounds} rounds")
    runs = {"with queries": per_customer(simulate(args, 16), args.k), "without": per_customer(simulate(args, 0), args.k)}
    rows = []
    with_q = runs["with queries"]
    for lo, hi in BUCKETS:
        mask = (with_q["items"] >= lo) & (with_q["items"] <= hi)
        if not mask.any():
            continue
        row = {"training items": f"{lo}-{hi}" if hi < 10**9 else f"{lo}+", "customers": int(mask.sum())}
        row["with a query"] = f"{(with_q['queries'][mask] > 0).mean():.0%}"
        for name, got in runs.items():
            same = (got["items"] >= lo) & (got["items"] <= hi)
            row[f"NDCG@{args.k} {name}"] = float(got["ndcg"][same].mean())
            row[f"Recall@{args.k} {name}"] = float(got["recall"][same].mean())
            row[f"content NDCG@{args.k} {name}"] = float(got["content_ndcg"][same].mean())
        row["NDCG gain"] = f"{row[f'NDCG@{args.k} with queries'] / max(row[f'NDCG@{args.k} without'], 1e-12):.2f}x"
        rows.append(row)
    print(table(rows))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

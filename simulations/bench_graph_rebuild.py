"""Benchmark: rebuild a shop's interest graph, and update one user's edges incrementally.

For each shop size (users) it generates synthetic embeddings of the shape the simulation
produces (``--dim``-d user vectors, unit item vectors plus an item bias, ``--history`` seen
items per user excluded from recommendations, ``--categories`` interests), then times

* ``build``: :func:`fedgraph.graph.build_interest_graph` (top-k items per user, top-k
  interests per user, top-k neighbours per item);
* ``write``: :meth:`fedgraph.graph.GraphStore.write` of that graph into a fresh SQLite file;
* ``upsert``: :meth:`GraphStore.upsert_user` of one user's interests and recommendations
  (``--upserts`` random users, each its own transaction) in the store just written, and
  ``score+upsert``: the same plus scoring that user against the whole catalog first.

Each size runs in a fresh subprocess, so its peak memory (sampled RSS, and the process's
``ru_maxrss``) is its own. Prints one Markdown table.

    python simulations/bench_graph_rebuild.py                    # 10k, 100k, 1M users
    python simulations/bench_graph_rebuild.py --users 10000 --items 2000 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_common import MemorySampler, load, machine, table  # noqa: E402


def _inputs(n_users: int, n_items: int, dim: int, history: int, categories: int, seed: int):
    rng = np.random.default_rng(seed)
    users = [f"u{i:07d}" for i in range(n_users)]
    items = [f"i{i:06d}" for i in range(n_items)]
    cats = [f"category-{c:02d}" for c in rng.integers(0, categories, n_items)]
    titles = [f"item {i}" for i in range(n_items)]
    item_vec = rng.standard_normal((n_items, dim), dtype=np.float32)
    item_vec /= np.linalg.norm(item_vec, axis=1, keepdims=True)
    user_vec = rng.standard_normal((n_users, dim), dtype=np.float32) * 3.0
    bias = rng.standard_normal(n_items, dtype=np.float32) * 0.1
    # Seen items: 1..2*history per user (CSR), handed over as one view per user like the simulation.
    lengths = rng.integers(1, 2 * history + 1, n_users)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    seen = rng.integers(0, n_items, int(indptr[-1]))
    exclude = [seen[indptr[u] : indptr[u + 1]] for u in range(n_users)]
    return users, user_vec, items, item_vec, titles, cats, bias, exclude


def one_size(args: argparse.Namespace, n_users: int) -> dict:
    import torch

    from fedgraph.graph import GraphStore, build_interest_graph

    torch.manual_seed(0)
    users, U, items, I, titles, cats, bias, exclude = _inputs(n_users, args.items, args.dim, args.history, args.categories, args.seed)
    row: dict = {"users": n_users, "items": args.items}
    with MemorySampler() as mem:
        t = time.perf_counter()
        graph = build_interest_graph(
            "bench",
            users,
            U,
            items,
            I,
            titles,
            cats,
            exclude=exclude,
            item_bias=bias,
            top_k_items=args.top_k_items,
            top_k_interests=args.top_k_interests,
            top_k_neighbours=args.top_k_neighbours,
            model_version="bench",
            round=1,
            device=args.device,
        )
        row["build_s"] = time.perf_counter() - t
    row["build_peak_mb"] = mem.delta_mb
    rows = len(graph.user_item) + len(graph.user_interest) + len(graph.item_item) + n_users + args.items
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        store = GraphStore(Path(tmp) / "graph.sqlite")
        with MemorySampler() as mem:
            t = time.perf_counter()
            store.write(graph)
            row["write_s"] = time.perf_counter() - t
        row["write_peak_mb"] = mem.delta_mb
        row["total_s"] = row["build_s"] + row["write_s"]
        row["rows"] = rows
        row["rows_per_s"] = rows / row["write_s"]
        row["db_mb"] = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 2**20

        # One-user incremental updates on the store just written.
        rng = np.random.default_rng(args.seed + 1)
        interests = np.array(graph.interests)
        items_arr = np.array(items)
        centroid = np.stack([I[np.array(cats) == c].mean(0) for c in graph.interests])
        centroid /= np.linalg.norm(centroid, axis=1, keepdims=True)
        only, full = [], []
        for u in rng.integers(0, n_users, args.upserts):
            t0 = time.perf_counter()
            v = U[u] + rng.standard_normal(args.dim).astype(np.float32)  # the user's new vector
            scores = I @ v + bias
            scores[exclude[u]] = -np.inf
            top = np.argpartition(-scores, args.top_k_items)[: args.top_k_items]
            logits = centroid @ (v / np.linalg.norm(v)) / 0.1
            p = np.exp(logits - logits.max())
            p /= p.sum()
            top_i = np.argsort(-p)[: args.top_k_interests]
            recs = [(str(items_arr[j]), float(scores[j])) for j in top]
            ints = [(str(interests[j]), float(p[j])) for j in top_i]
            t1 = time.perf_counter()
            store.upsert_user("bench", users[u], ints, recs, model_version="bench-inc", round=2)
            t2 = time.perf_counter()
            only.append(t2 - t1)
            full.append(t2 - t0)
        store.close()
    row["upsert_ms_median"] = 1000 * float(np.median(only))
    row["upsert_ms_p95"] = 1000 * float(np.percentile(only, 95))
    row["score+upsert_ms_median"] = 1000 * float(np.median(full))
    row["score+upsert_ms_p95"] = 1000 * float(np.percentile(full, 95))
    row["process_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Each size runs in its own subprocess; figures are wall-clock on a possibly shared machine.",
    )
    p.add_argument("--users", default="10000,100000,1000000", help="comma-separated shop sizes in users (default %(default)s)")
    p.add_argument("--items", type=int, default=5000, help="catalog items of the shop (default %(default)s)")
    p.add_argument(
        "--dim", type=int, default=448, help="embedding width (default %(default)s: the default model's 64 learned + 384 text columns)"
    )
    p.add_argument("--history", type=int, default=16, help="mean seen items excluded per user (default %(default)s)")
    p.add_argument("--categories", type=int, default=20, help="interests (item categories) (default %(default)s)")
    p.add_argument("--top-k-items", type=int, default=20)
    p.add_argument("--top-k-interests", type=int, default=5)
    p.add_argument("--top-k-neighbours", type=int, default=10)
    p.add_argument("--upserts", type=int, default=200, help="one-user updates timed per size (default %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device for scoring: cpu, cuda (default %(default)s)")
    p.add_argument("--tmp", default=None, help="directory for the temporary SQLite files (default: system temp)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="also print the rows as JSON")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one is not None:
        print(json.dumps(one_size(args, args.one)))
        return
    print(f"# graph rebuild benchmark — {machine(args.device)}")
    rows = []
    for n in [int(x) for x in args.users.split(",") if x]:
        before = load()
        argv = [a for a in sys.argv[1:] if a != "--json"]
        out = subprocess.run([sys.executable, __file__, *argv, "--one", str(n)], capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            rows.append({"users": n, "build_s": float("nan"), "load": before})
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["load"] = f"{before} → {load()}"
        rows.append(row)
        print(
            f"  {n:,} users done: build {row['build_s']:.1f} s, write {row['write_s']:.1f} s (load {row['load']})",
            file=sys.stderr,
            flush=True,
        )
    cols = [
        "users",
        "items",
        "build_s",
        "write_s",
        "total_s",
        "rows",
        "rows_per_s",
        "build_peak_mb",
        "write_peak_mb",
        "process_peak_mb",
        "db_mb",
        "upsert_ms_median",
        "upsert_ms_p95",
        "score+upsert_ms_median",
        "score+upsert_ms_p95",
        "load",
    ]
    print(table(rows, cols))
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

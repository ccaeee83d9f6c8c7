"""Benchmark: federated round throughput against the number of shops (Flower simulation engine).

For each federation size it runs ``fedgraph simulate`` (fedgraph's own runtime: a private
SuperLink in simulation mode, Ray backend, one virtual ClientApp per shop, ``--cpus-per-shop``
CPUs each, so ``cores / cpus-per-shop`` light clients share the machine, and a fractional
``--gpus-per-shop`` share of one GPU when ``--device cuda``) on a synthetic federation
(``data.source=synthetic data.synthetic_shops=N``), without baselines, and reports

* ``prepare_s``: data generation, split, text features (warm text cache: see below), shop files;
* ``startup_s``: SuperLink + Ray start-up and the initial (round 0) evaluation;
* ``round_s``: seconds of each federated round (train every shop, aggregate, checkpoint, and
  evaluate as configured), from the run's ``federated_history.json``; ``per_shop_ms`` is the
  mean round divided by the number of shops (flat = linear growth);
* ``graphs_s``: interest-graph rebuild of every shop; ``total_s``: the whole command;
* ``peak_pss_mb``: peak of the summed proportional set size of the command and every process it
  started (SuperLink, Ray, client workers), sampled each second; ``peak_rss_mb`` the same with
  RSS (counts shared pages once per process);
* ``server_pss_mb``: peak PSS of Flower's ServerApp process (``flwr-simulation``: the round loop,
  what the server holds per shop), and ``server_kb_per_shop`` that divided by the shops;
  ``worker_pss_mb``: peak PSS of the largest Ray worker (a shop's client).

The text cache (``--cache-dir``) is shared between sizes and runs: the first run of a size
embeds its catalog (cold; MiniLM on CPU, minutes for 1,000 shops), later runs do not. The
``text`` column says how many texts were embedded in that run.

    python simulations/bench_rounds.py                             # 10, 100, 1000 shops, 2 rounds
    python simulations/bench_rounds.py --shops 10,100 --rounds 1 --set evaluation.every_rounds=0
    python simulations/bench_rounds.py --shops 100 --device cuda --gpus-per-shop 0.1
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import MemorySampler, load, machine, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: Processes whose peak memory is reported on its own: Flower's ServerApp process (it runs the
#: round loop and holds what the server keeps per shop) and the largest Ray worker (a shop's client).
ROLES = {"server": "flwr-simulation", "worker": "ray::"}


def run_one(args: argparse.Namespace, n: int) -> dict:
    out = Path(args.out) / f"shops-{n}"
    if out.exists():
        shutil.rmtree(out)
    overrides = [
        "data.source=synthetic",
        f"data.synthetic_shops={n}",
        f"train.rounds={args.rounds}",
        "evaluation.baselines=[]",
        "model.shop_private=none",
        f"data.synthetic_users_per_shop=[{args.users_per_shop}]",
        f"data.synthetic_items_per_shop=[{args.items_per_shop}]",
        f"features.cache_dir={args.cache_dir}",
        f"federation.cpus_per_shop={args.cpus_per_shop}",
        f"federation.gpus_per_shop={args.gpus_per_shop}",
        f"federation.total_cpus={args.total_cpus}",
        f"train.device={args.device}",
        *args.set,
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    log = Path(args.out) / f"shops-{n}.log"
    before = load()
    with open(log, "w") as handle, MemorySampler(tree=True, interval=1.0, roles=ROLES) as mem:
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "fedgraph.cli", "simulate", "--out", str(out), *overrides],
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        wall = time.perf_counter() - started
    row: dict = {"shops": n, "load": f"{before} → {load()}"}
    if proc.returncode != 0:
        row["round_s"] = f"failed (exit {proc.returncode}, see {log})"
        return row
    metrics = json.loads((out / "metrics.json").read_text())
    history = json.loads((out / "federated_history.json").read_text())["rounds"]
    timings = metrics["timings"]
    rounds = [r["seconds"] for r in history if r["round"] > 0]
    text = re.search(r"'embedded': (\d+)", log.read_text())
    index = json.loads((out / "shops" / "index.json").read_text())
    row.update(
        {
            "users": sum(s["users"] for s in index["summary"]),
            "interactions": sum(s["interactions"] for s in index["summary"]),
            "text": int(text.group(1)) if text else -1,
            "prepare_s": timings["prepare_s"],
            "startup_s": timings["federated_s"] - sum(rounds),
            "round_s": " / ".join(f"{s:.1f}" for s in rounds),
            "mean_round_s": sum(rounds) / len(rounds),
            "per_shop_ms": 1000 * sum(rounds) / len(rounds) / n,
            "graphs_s": timings["graphs_s"],
            "total_s": wall,
            "peak_pss_mb": mem.peak_mb,
            "peak_rss_mb": mem.peak_rss_mb,
            "procs": mem.peak_procs,
            "server_pss_mb": mem.role_peak_mb["server"],
            "server_kb_per_shop": 1024 * mem.role_peak_mb["server"] / n,
            "worker_pss_mb": mem.role_peak_mb["worker"],
            "ndcg@20": sum(e["ndcg@20"] for e in history[-1]["eval"].values()) / max(1, len(history[-1]["eval"])),
        }
    )
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shops", default="10,100,1000", help="comma-separated federation sizes (default %(default)s)")
    p.add_argument("--rounds", type=int, default=2, help="federated rounds per run (default %(default)s)")
    p.add_argument("--users-per-shop", default="20,500", help="synthetic users per shop, log-uniform range (default %(default)s)")
    p.add_argument("--items-per-shop", default="50,500", help="synthetic items per shop, log-uniform range (default %(default)s)")
    p.add_argument("--cpus-per-shop", type=int, default=1, help="Flower client-resources num-cpus (default %(default)s)")
    p.add_argument("--gpus-per-shop", type=float, default=0.0, help="Flower client-resources num-gpus, a fraction shares one GPU")
    p.add_argument("--total-cpus", type=int, default=0, help="CPUs Ray may use (0 = all)")
    p.add_argument("--device", default="cpu", help="train.device: cpu, cuda or auto (default %(default)s)")
    p.add_argument("--set", action="append", default=[], metavar="section.key=value", help="extra config override (repeatable)")
    p.add_argument("--cache-dir", default=str(ROOT / "runs" / "bench-cache" / "text"), help="text cache (default %(default)s)")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench-rounds"), help="where run directories go (default %(default)s)")
    p.add_argument("--keep", action="store_true", help="keep the run directories")
    p.add_argument("--json", action="store_true", help="also print the rows as JSON")
    args = p.parse_args()
    print(f"# round throughput benchmark — {machine(args.device)}; {args.rounds} rounds; overrides {args.set or 'none'}")
    rows = []
    for n in [int(x) for x in args.shops.split(",") if x]:
        row = run_one(args, n)
        rows.append(row)
        print(
            f"  {n:,} shops: rounds {row.get('round_s')} s, total {row.get('total_s', float('nan')):.0f} s (load {row['load']})",
            file=sys.stderr,
            flush=True,
        )
    cols = [
        "shops",
        "users",
        "interactions",
        "text",
        "prepare_s",
        "startup_s",
        "round_s",
        "mean_round_s",
        "per_shop_ms",
        "graphs_s",
        "total_s",
        "peak_pss_mb",
        "peak_rss_mb",
        "procs",
        "server_pss_mb",
        "server_kb_per_shop",
        "worker_pss_mb",
        "ndcg@20",
        "load",
    ]
    print(table(rows, cols))
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

"""Benchmark: recommendation quality of fedgraph against a well-known peer on the same split.

The peer is PyTorch Geometric's ``LightGCN`` trained centrally on all shops' data pooled
(``evaluation.baselines=["lightgcn_pooled"]``, :func:`fedgraph.baselines.methods.lightgcn_pooled`),
non-private. fedgraph is the federated model (Flower simulation), non-private and, when the
run configuration has a ``[privacy]`` section, with user-level DP-SGD at
``privacy.target_epsilon`` (default 8). Every method is scored by the same evaluation
(:mod:`fedgraph.evaluation`): each user's held-out latest items, Recall@20 and NDCG@20 over the
whole shop catalog, macro-averaged over shops and weighted by evaluated users.

Datasets: ``online_retail`` (the bundled UCI data, default configuration: 10 shops,
16 rounds; about 5 minutes per run on 2 idle cores) and ``synthetic`` (a multi-catalog
federation: ``data.synthetic_shops`` shops, default 20). Each (dataset, privacy) pair is one
``fedgraph simulate`` run; ``--reuse DATASET:MODE=RUN_DIR`` reads an existing run's
``metrics.json`` instead (MODE is ``nonprivate`` or ``dp``).

    python simulations/bench_quality.py                                  # both datasets, non-private and eps=8
    python simulations/bench_quality.py --datasets synthetic --set train.rounds=8
    python simulations/bench_quality.py --reuse online_retail:nonprivate=runs/online-retail
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import load, machine, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LABELS = {
    "lightgcn_pooled": "LightGCN (PyG), central, non-private",
    "federated": "fedgraph federated",
    "pooled": "fedgraph model, central (pooled)",
    "local": "each shop alone",
    "popularity": "popularity",
}


def has_privacy() -> bool:
    from fedgraph.config import RunConfig

    return hasattr(RunConfig(), "privacy")


def run(args: argparse.Namespace, dataset: str, mode: str) -> tuple[Path, float, str]:
    key = f"{dataset}:{mode}"
    if key in args.reuse:
        return Path(args.reuse[key]), float("nan"), "reused"
    out = Path(args.out) / f"{dataset}-{mode}"
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    overrides = [f"data.source={dataset}", f"features.cache_dir={args.cache_dir}", f"train.device={args.device}", *args.set]
    if dataset == "synthetic":
        overrides.append(f"data.synthetic_shops={args.synthetic_shops}")
    if mode == "dp":
        overrides += ["privacy.enabled=true", f"privacy.target_epsilon={args.epsilon}", "evaluation.baselines=[]"]
    else:
        overrides.append(f"evaluation.baselines={json.dumps(args.baselines.split(','))}")
    before = load()
    started = time.perf_counter()
    with open(out.with_suffix(".log"), "w") as log:
        proc = subprocess.run(
            [sys.executable, "-m", "fedgraph.cli", "simulate", "--out", str(out), *overrides],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    if proc.returncode != 0:
        raise SystemExit(f"{key}: fedgraph simulate failed (exit {proc.returncode}); see {out.with_suffix('.log')}")
    return out, time.perf_counter() - started, f"{before} → {load()}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="online_retail,synthetic", help="comma-separated (default %(default)s)")
    p.add_argument("--modes", default="nonprivate,dp", help="nonprivate, dp (default %(default)s; dp only if [privacy] exists)")
    p.add_argument("--epsilon", type=float, default=8.0, help="privacy.target_epsilon of the DP runs (default %(default)s)")
    p.add_argument("--synthetic-shops", type=int, default=20, help="shops of the synthetic federation (default %(default)s)")
    p.add_argument("--baselines", default="lightgcn_pooled", help="baselines in the non-private runs (default %(default)s)")
    p.add_argument("--set", action="append", default=[], metavar="section.key=value", help="extra override for every run")
    p.add_argument("--reuse", action="append", default=[], metavar="DATASET:MODE=RUN_DIR", help="read this run's metrics.json")
    p.add_argument("--device", default="cpu", help="train.device (default %(default)s)")
    p.add_argument("--cache-dir", default=str(ROOT / "runs" / "bench-cache" / "text"), help="text cache (default %(default)s)")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench-quality"), help="where run directories go (default %(default)s)")
    p.add_argument("--json", action="store_true", help="also print the rows as JSON")
    args = p.parse_args()
    args.reuse = dict(item.split("=", 1) for item in args.reuse)
    modes = [m for m in args.modes.split(",") if m]
    note = ""
    if "dp" in modes and not has_privacy():
        modes.remove("dp")
        note = "DP: not available (no [privacy] section in this fedgraph's configuration)"
    print(f"# quality benchmark — {machine(args.device)}" + (f"; {note}" if note else ""))
    rows = []
    for dataset in [d for d in args.datasets.split(",") if d]:
        for mode in modes:
            path, seconds, loads = run(args, dataset, mode)
            metrics = json.loads((path / "metrics.json").read_text())
            cfg = metrics.get("config", {})
            k = metrics.get("k", 20)
            for method, m in metrics["methods"].items():
                if mode == "dp" and method != "federated":
                    continue
                label = LABELS.get(method, method) + (
                    f", DP ε={args.epsilon:g}"
                    if mode == "dp" and method == "federated"
                    else ", non-private"
                    if method == "federated"
                    else ""
                )
                rows.append(
                    {
                        "dataset": dataset,
                        "method": label,
                        "shops": len(m.get("per_shop", {})),
                        f"Recall@{k}": m[f"recall@{k}"],
                        f"NDCG@{k}": m[f"ndcg@{k}"],
                        f"Recall@{k} (weighted)": m["weighted"][f"recall@{k}"],
                        f"NDCG@{k} (weighted)": m["weighted"][f"ndcg@{k}"],
                        "rounds": cfg.get("train", {}).get("rounds", ""),
                        "run_s": seconds,
                        "run": str(path),
                        "load": loads,
                    }
                )
            print(f"  {dataset} {mode}: done ({loads})", file=sys.stderr, flush=True)
    print(table(rows))
    if note:
        print(f"\n{note}")
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

"""Benchmark: local training throughput of one shop, without and with DP-SGD.

For each shop size (users) it prepares one synthetic shop the way ``fedgraph simulate``
does (:func:`fedgraph.data.synthetic.generate_federation` with one shop, the temporal
split, :func:`fedgraph.shop.build_shop_data`), except that the item text vectors are random
unit vectors instead of MiniLM embeddings (same shape; throughput does not depend on them).
It then runs :func:`fedgraph.training.local.train_local` for ``--epochs`` epochs with the
default ``[train]`` settings and the model of the default ``[model]`` section:

* ``non-DP``: plain Adam over shuffled batches of ``batch_size`` users;
* ``DP``: user-level DP-SGD (``dp=DPSettings(...)``: Poisson sampling at rate
  ``batch_size / users``, so the same expected batch, clipping, noise; Opacus ghost clipping
  by default, ``--dp-modes ghost,hooks`` adds classic per-sample gradients).

Throughput is interactions/s: the shop's training interactions (user-item edges of trainable
users) times epochs over wall seconds; users/s and steps/s are beside it. Peak memory is the
RSS growth of a fresh subprocess during training (data already loaded and the DP module with
Opacus imported in both modes), so DP and non-DP are measured on the same footing;
``process_peak_mb`` is the whole process's peak RSS (what a shop has to provision). The DP/non-DP ratios of time and peak memory are the headline.

    python simulations/bench_local_training.py                   # 1k, 10k, 100k users
    python simulations/bench_local_training.py --users 1000 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_common import MemorySampler, load, machine, table  # noqa: E402


def shop_file(args: argparse.Namespace, n_users: int) -> Path:
    """Prepare (once) and return the ``.npz`` of a synthetic shop with ``n_users`` users."""
    from fedgraph.config import RunConfig
    from fedgraph.data.split import temporal_split
    from fedgraph.data.synthetic import generate_federation
    from fedgraph.features import item_features
    from fedgraph.features.encoders import text_dim
    from fedgraph.shop import build_shop_data

    cfg = RunConfig()
    path = Path(args.cache) / f"shop-u{n_users}-i{args.items}-s{args.seed}.npz"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fed = generate_federation(1, seed=args.seed, users_per_shop=(n_users, n_users), items_per_shop=(args.items, args.items))
    train, test = temporal_split(fed.events, test_fraction=cfg.data.test_fraction, min_user_items=cfg.data.min_user_items)
    rng = np.random.default_rng(args.seed)
    text = rng.standard_normal((len(fed.catalog), text_dim(cfg))).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    feats = item_features(text, fed.catalog["price"].to_numpy(), neighbours=cfg.features.neighbours, hops=cfg.features.hops)
    shop = fed.catalog["shop"].iloc[0]
    data = build_shop_data(shop, train, test, fed.catalog, feats, recency_halflife_days=cfg.model.recency_halflife_days)
    data.save(path)
    return path


def dp_available() -> str:
    try:
        import inspect

        from fedgraph.privacy import DPSettings  # noqa: F401
        from fedgraph.training.local import train_local

        return "" if "dp" in inspect.signature(train_local).parameters else "train_local takes no dp="
    except ImportError as exc:
        return f"not available ({exc})"


def one_run(args: argparse.Namespace, n_users: int, mode: str) -> dict:
    import torch

    # train_local imports the DP module (Opacus, SciPy) on first use: a one-time process cost of
    # about 1.6 s and tens of MB that is not training. Import it here, before the timed and
    # measured region, in both modes, so the two are compared on the same footing.
    import fedgraph.training.dp  # noqa: F401
    from fedgraph.config import RunConfig
    from fedgraph.features import pipeline
    from fedgraph.models.interest_model import InterestModel
    from fedgraph.shop import ShopData
    from fedgraph.training.local import TrainSettings, train_local

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = RunConfig()
    data = ShopData.load(shop_file(args, n_users))
    users = data.trainable_users()
    interactions = int((data.indptr[users + 1] - data.indptr[users]).sum())
    t = cfg.train
    settings = TrainSettings(
        epochs=args.epochs,
        batch_size=t.batch_size,
        lr=t.lr,
        weight_decay=t.weight_decay,
        history=t.history,
        positives=t.positives,
        negatives=t.negatives,
        seed=t.seed,
    )
    torch.manual_seed(0)
    m = cfg.model
    model = InterestModel(
        pipeline.feature_width(cfg),
        dim=m.dim,
        hidden=m.hidden,
        temperature=m.temperature,
        num_local_items=data.num_items if m.local_items else 0,
        content_dim=384 if m.content_score else 0,
    )
    dp = None
    if mode != "non-DP":
        from fedgraph.privacy import DPSettings

        dp = DPSettings(
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            sample_rate=min(1.0, t.batch_size / len(users)),
            delta=1.0 / max(len(users), 2),
            accountant="rdp",
            grad_sample_mode=mode.split()[-1],
            noise_seed=0,
        )
    kwargs = {"dp": dp} if dp is not None else {}
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with MemorySampler() as mem:
        started = time.perf_counter()
        result = train_local(model, data, settings, device=device, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    row = {
        "users": n_users,
        "trainable": int(len(users)),
        "interactions": interactions,
        "mode": mode,
        "epochs": args.epochs,
        "steps": int(result.steps),
        "seconds": seconds,
        "interactions_per_s": interactions * args.epochs / seconds,
        "users_per_s": len(users) * args.epochs / seconds,
        "steps_per_s": result.steps / seconds,
        "peak_mb": mem.delta_mb,
        "process_peak_mb": mem.peak_mb,
        "loss": float(result.loss),
    }
    if device.type == "cuda":
        row["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Every (size, mode) runs in a fresh subprocess; shops are cached under --cache.",
    )
    p.add_argument("--users", default="1000,10000,100000", help="comma-separated shop sizes (default %(default)s)")
    p.add_argument("--items", type=int, default=2000, help="catalog items per shop (default %(default)s)")
    p.add_argument("--epochs", type=int, default=1, help="local epochs timed (default %(default)s)")
    p.add_argument("--dp-modes", default="ghost", help="DP grad-sample modes to run: ghost, hooks, or both (default %(default)s)")
    p.add_argument("--no-dp", action="store_true", help="run non-DP only")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument(
        "--cache",
        default=str(Path(__file__).resolve().parents[1] / "runs" / "bench-cache" / "shops"),
        help="where prepared shops are kept (default %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="also print the rows as JSON")
    p.add_argument("--one", nargs=2, metavar=("USERS", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one is not None:
        print(json.dumps(one_run(args, int(args.one[0]), args.one[1])))
        return
    print(f"# local training benchmark — {machine(args.device)}")
    unavailable = "" if args.no_dp else dp_available()
    modes = ["non-DP"] + ([] if args.no_dp or unavailable else [f"DP {m}" for m in args.dp_modes.split(",") if m])
    rows = []
    argv = [a for a in sys.argv[1:] if a != "--json"]
    for n in [int(x) for x in args.users.split(",") if x]:
        shop_file(args, n)  # prepare outside the timed subprocesses
        base = None
        for mode in modes:
            before = load()
            out = subprocess.run([sys.executable, __file__, *argv, "--one", str(n), mode], capture_output=True, text=True)
            if out.returncode != 0:
                print(out.stderr[-3000:], file=sys.stderr)
                rows.append({"users": n, "mode": mode, "seconds": float("nan"), "load": before})
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["load"] = f"{before} → {load()}"
            if mode == "non-DP":
                base = row
            elif base is not None:
                row["time_ratio"] = (row["seconds"] / row["epochs"]) / (base["seconds"] / base["epochs"])
                row["mem_ratio"] = row["peak_mb"] / base["peak_mb"] if base["peak_mb"] > 0 else float("nan")
                row["process_mem_ratio"] = row["process_peak_mb"] / base["process_peak_mb"]
            rows.append(row)
            print(f"  {n:,} users {mode}: {row['seconds']:.1f} s (load {row['load']})", file=sys.stderr, flush=True)
        if unavailable:
            rows.append({"users": n, "mode": f"DP {unavailable}"})
    cols = [
        "users",
        "trainable",
        "interactions",
        "mode",
        "epochs",
        "steps",
        "seconds",
        "interactions_per_s",
        "users_per_s",
        "steps_per_s",
        "peak_mb",
        "process_peak_mb",
        "time_ratio",
        "mem_ratio",
        "process_mem_ratio",
        "load",
    ]
    if args.device.startswith("cuda"):
        cols.insert(cols.index("peak_mb") + 1, "gpu_peak_mb")
    print(table(rows, cols))
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

"""Should a shop join? The federated system against the best a shop can do alone, from a run's metrics.json.

    fedgraph simulate --out runs/online-retail
    python simulations/join_or_not.py runs/online-retail [--system hybrid]

Prints, on the test split (NDCG@k):

* the system's macro figure over the best single-shop method's (the largest macro of
  ``ease``, ``itemknn`` and ``local`` present; ``ease_dp`` instead of ``ease`` with ``--dp``),
* in how many shops the system beats the best single-shop method *of that shop*,
* the system over the best pooled reference (largest macro of ``pooled``, ``pooled_ease``,
  ``lightgcn_pooled`` present),
* a per-shop table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SINGLE = ("ease", "itemknn", "local")
POOLED = ("pooled", "pooled_ease", "lightgcn_pooled")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a finished run directory (holds metrics.json)")
    parser.add_argument("--system", default="hybrid", help="the federated row to judge: hybrid (default) or federated")
    parser.add_argument("--dp", action="store_true", help="compare with the DP single-shop methods: ease_dp and local")
    args = parser.parse_args(argv)
    path = args.run / "metrics.json"
    if not path.exists():
        parser.error(f"{path} does not exist: the run has not finished")
    doc = json.loads(path.read_text())
    k, methods = doc["k"], doc["methods"]
    key = f"ndcg@{k}"
    if args.system not in methods:
        parser.error(f"the run has no {args.system!r} row (rows: {', '.join(methods)})")
    single = [m for m in (("ease_dp", "local") if args.dp else SINGLE) if m in methods]
    pooled = [m for m in POOLED if m in methods]
    system = methods[args.system]
    best_single = max(single, key=lambda m: methods[m][key])
    print(f"{args.system}: macro {key} {system[key]:.4f}")
    print(f"best single-shop method: {best_single} {methods[best_single][key]:.4f} -> ratio {system[key] / methods[best_single][key]:.3f}")
    if pooled:
        best_pooled = max(pooled, key=lambda m: methods[m][key])
        print(
            f"best pooled reference: {best_pooled} {methods[best_pooled][key]:.4f} -> ratio {system[key] / methods[best_pooled][key]:.3f}"
        )
    shops = [s["shop"] for s in doc["shops"]]
    wins = 0
    print(f"\n{'shop':<14} {'users':>6} {args.system:>9} " + " ".join(f"{m:>9}" for m in single) + "   best alone   wins")
    for s in doc["shops"]:
        shop = s["shop"]
        own = system["per_shop"][shop][key]
        alone = {m: methods[m]["per_shop"][shop][key] for m in single}
        best = max(alone, key=alone.get)
        win = own > alone[best]
        wins += win
        print(
            f"{shop:<14} {s['users']:>6} {own:>9.4f} "
            + " ".join(f"{alone[m]:>9.4f}" for m in single)
            + f"   {best:<10}   {'yes' if win else 'no'}"
        )
    print(f"\n{args.system} beats the shop's best single-shop method in {wins} of {len(shops)} shops")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

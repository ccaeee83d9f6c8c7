"""Privacy/utility table: NDCG@20 and Recall@20 of fedgraph at several user-level ε, beside the
each-shop-alone baseline (trained under the same DP plan) and all data pooled (non-private).

Make the runs (Online Retail, configs/default.toml; one per ε, about 10 minutes each on 2 cores),
then print the table from their metrics.json files:

    fedgraph simulate --out runs/dp-epsinf
    for eps in 8 4 1; do
      fedgraph simulate --out runs/dp-eps$eps privacy.enabled=true privacy.target_epsilon=$eps \\
          "evaluation.baselines=['popularity','local']"
    done
    python simulations/privacy_utility.py runs/dp-epsinf runs/dp-eps8 runs/dp-eps4 runs/dp-eps1

Every ε printed is read from the run's verified privacy ledgers (the largest over shops), not
from the configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _row(run: Path, reference: dict | None) -> tuple[list[str], dict]:
    doc = json.loads((run / "metrics.json").read_text())
    methods, privacy = doc["methods"], doc["privacy"]
    if privacy.get("enabled"):
        per_shop = privacy["per_shop"]
        eps = f"{privacy['max_epsilon']:.2f}"
        deltas = sorted({v["delta"] for v in per_shop.values()})
        delta = f"{deltas[0]:.0e}–{deltas[-1]:.0e}" if len(deltas) > 1 else f"{deltas[0]:.0e}"
        sigma = sorted(v["noise_multiplier"] for v in per_shop.values())
        noise = f"{sigma[0]:.2f}–{sigma[-1]:.2f}"
    else:
        eps, delta, noise = "∞ (no DP)", "–", "0"
    fed, local = methods["federated"], methods.get("local")
    pooled = (reference or doc)["methods"].get("pooled")
    keep = ""
    if reference is not None:
        keep = f"{100 * fed['ndcg@20'] / reference['methods']['federated']['ndcg@20']:.0f} %"

    def fmt(m: dict | None, key: str) -> str:
        return f"{m[key]:.4f}" if m else "–"

    cells = [
        eps,
        delta,
        noise,
        fmt(fed, "ndcg@20"),
        fmt(fed, "recall@20"),
        keep or "100 %",
        fmt(local, "ndcg@20"),
        fmt(local, "recall@20"),
        fmt(methods.get("popularity"), "ndcg@20"),
        fmt(pooled, "ndcg@20"),
    ]
    return cells, doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories; the first without DP is the non-private reference")
    args = parser.parse_args(argv)
    missing = [str(r) for r in args.runs if not (r / "metrics.json").exists()]
    if missing:
        parser.error(f"no metrics.json in {', '.join(missing)}: the run has not finished (see the commands in --help)")
    reference = None
    for run in args.runs:
        doc = json.loads((run / "metrics.json").read_text())
        if not doc["privacy"].get("enabled"):
            reference = doc
            break
    head = [
        "user-level ε (max over shops)",
        "δ per shop",
        "σ",
        "federated NDCG@20",
        "federated Recall@20",
        "of non-private NDCG",
        "alone NDCG@20",
        "alone Recall@20",
        "popularity NDCG@20",
        "pooled NDCG@20 (no DP)",
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for run in args.runs:
        cells, _ = _row(run, reference)
        print("| " + " | ".join(cells) + " |")
    print(
        "\nNDCG/Recall: macro averages over shops, held-out last interactions per user; "
        "'alone' at each ε is trained under the same per-shop DP plan as federation."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Choose DP training settings on validation: one ``fedgraph simulate`` run per candidate, each
compared on the federated model's best macro validation NDCG@20 over its rounds (the figure
model selection keeps). The test split is not read.

    python simulations/dp_sweep.py --config configs/dp.toml --out runs/dpsweep \\
        "" "train.lr=0.01" "train.lr=0.05" "train.local_epochs=4" "train.batch_size=64"

Each argument after the options is one candidate: space-separated overrides on top of
``--config`` ("" is the configuration as it is). Runs already finished under ``--out`` are
reused, so an interrupted sweep continues where it stopped.

What the choice costs in privacy: every candidate is trained and validated on the shops'
private data and only the winner's settings are kept, so the chosen configuration's ε does not
cover the selection itself (the usual practice, and a leak of at most which candidate won; a
deployment would choose once, in simulation or on public data, and keep the settings).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path


def slug(overrides: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", overrides).strip("_") or "as-configured"


def best_validation(run: Path) -> tuple[int, float]:
    selection = json.loads((run / "selection.json").read_text())
    return int(selection["round"]), float(selection["validation_ndcg"][str(selection["round"])])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the run configuration every candidate starts from")
    parser.add_argument("--out", required=True, type=Path, help="folder for the candidates' run directories")
    parser.add_argument("candidates", nargs="+", help='space-separated overrides per candidate ("" = as configured)')
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for overrides in args.candidates:
        run = args.out / slug(overrides)
        if not (run / "selection.json").is_file():
            command = [sys.executable, "-m", "fedgraph.cli", "simulate", "--config", args.config, "--out", str(run)]
            command += ["evaluation.baselines=[]", *overrides.split()]
            print("$", " ".join(command), flush=True)
            if subprocess.run(command).returncode != 0:
                print(f"candidate {overrides!r} failed; see {run}", file=sys.stderr)
                continue
        kept, value = best_validation(run)
        rows.append((overrides or "(as configured)", kept, value))
        print(f"{overrides or '(as configured)'}: round {kept}, validation NDCG@20 {value:.4f}", flush=True)
    if not rows:
        return 1
    print("\n| overrides | round kept | macro validation NDCG@20 |\n|---|---|---|")
    for overrides, kept, value in sorted(rows, key=lambda r: -r[2]):
        print(f"| `{overrides}` | {kept} | {value:.4f} |")
    print(f"\nchosen: {max(rows, key=lambda r: r[2])[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

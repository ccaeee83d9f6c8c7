"""The ``fedgraph audit`` subcommand (registered by :mod:`fedgraph.cli`)."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG_AUDIT = """\
what it does:
  1. cross-checks the run's records: each shop's privacy ledger (HMAC chain) against the
     server's round history, the ledger plans and the recorded configuration against
     config.toml, checkpoints against their digests, shop data against the index;
  2. states the promise: privacy unit, (epsilon, delta) per shop under both accountants, noise,
     sampling, clipping, client-level DP and secure aggregation settings;
  3. tries to break it on the largest shops: membership inference (loss and calibrated),
     a one-run canary audit (an epsilon lower bound at 95%), and update leakage (what the
     server infers about a shop's purchases from its update, with/without DP, under SecAgg+);
  4. writes RUN_DIR/audit/audit.html (self-contained, prints to PDF) and audit.json
     (validated against fedgraph/audit/report.schema.json), with a verdict per shop.
  A run whose records were altered is reported as TAMPERED at the top.

examples:
  fedgraph audit runs/smoke
  fedgraph audit runs/smoke --out audits/smoke --models 8 --canaries 200
  fedgraph audit runs/smoke --no-attacks        # records and promise only (seconds)

exit status: 0 consistent, no DP claim or not refutable at this audit size, 3 inconsistent, 4 tampered, 5 not private
(DP noise seeded from the configuration).
"""


def add_audit_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit",
        help="privacy audit report of a finished run (HTML + JSON)",
        description="Audit a finished run: what it promised, and attacks that try to break the promise.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG_AUDIT,
    )
    p.add_argument("run", type=Path, metavar="RUN_DIR", help="a run directory written by fedgraph simulate")
    p.add_argument("--out", "-o", type=Path, help="output directory (default RUN_DIR/audit)")
    p.add_argument("--models", type=int, default=4, help="audit models per shop for membership inference (default 4)")
    p.add_argument("--canaries", type=int, default=100, help="canary customers per shop for the one-run audit (default 100)")
    p.add_argument("--shops", type=int, default=3, help="audit at most this many shops, largest first (default 3)")
    p.add_argument("--shadows", type=int, default=24, help="shadow shops per shop for the leakage attack (default 24)")
    p.add_argument("--epochs", type=int, help="training passes of the audit models (default: exactly the run's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the audit's own randomness (default 0)")
    p.add_argument("--no-attacks", action="store_true", help="check the records and state the promise only")


def run_audit_command(args: argparse.Namespace) -> int:
    from fedgraph.audit import AuditOptions, run_audit

    if args.models < 1 or args.canaries < 2 or args.shops < 1 or args.shadows < 2:
        raise SystemExit("fedgraph audit: --models >= 1, --canaries >= 2, --shops >= 1 and --shadows >= 2")
    options = AuditOptions(
        models=args.models,
        canaries=args.canaries,
        max_shops=args.shops,
        shadows=args.shadows,
        epochs=args.epochs,
        seed=args.seed,
        attacks=not args.no_attacks,
    )
    doc = run_audit(args.run, args.out, options, say=lambda line: print(line, flush=True))
    return {"TAMPERED": 4, "INCONSISTENT": 3, "NOT PRIVATE": 5}.get(doc["status"], 0)

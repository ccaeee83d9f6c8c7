"""The ``fedgraph`` command line.

Run ``fedgraph --help`` or ``fedgraph COMMAND --help``: every command explains what it does,
what it writes and shows an example.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def _simulate_epilog() -> str:
    """The simulate help's epilog, with one line per registered baseline (fedgraph.baselines)."""
    from fedgraph.baselines import in_report_order

    width = max(len(b.name) for b in in_report_order())
    lines = "\n".join(f"       {b.name:<{width}}  {b.explain}" for b in in_report_order())
    return EPILOG_SIMULATE.replace("{baselines}", lines)


EPILOG_SIMULATE = """\
what it does:
  1. loads the shop logs (default: the bundled UCI Online Retail data, split into shops),
     validates them and holds out each user's latest items for evaluation;
  2. embeds item text with MiniLM (cached on disk: a second run embeds nothing);
  3. runs federated training with Flower's simulation engine, one virtual client per shop,
     printing a line per round and writing a checkpoint per round;
  4. trains the baselines (evaluation.baselines; any settings chosen on validation):
{baselines}
  5. chooses the round kept and each shop's hybrid blend on the validation split, scores the
     choice once on test, and rebuilds each shop's interest graph into graph.sqlite;
  6. writes metrics.json and metrics.png and prints the comparison table.

privacy (see PRIVACY.md):
  default: no differential privacy (the report says so).
  privacy.enabled=true privacy.target_epsilon=8   user-level DP-SGD in every shop (Opacus;
                                                  ε per shop, RDP accountant, δ ≤ 1e-5)
  --config configs/dp.toml                        the tuned DP configuration (ε = 8)
  privacy.secure_aggregation=true                 Flower SecAgg+: the server sees only the sum
  privacy.client_dp=fixed|adaptive                client-level DP at the server (unit: one shop)

examples:
  fedgraph simulate                                  # default config, output in runs/<time>
  fedgraph simulate --config configs/smoke.toml --out runs/smoke
  fedgraph simulate train.rounds=3 data.max_users_per_shop=200 federation.strategy=fedprox
  fedgraph simulate --resume runs/20261125-101500   # continue a stopped run

any configuration key can be overridden as section.key=value (see configs/default.toml).
"""

EPILOG_GRAPH = """\
examples:
  fedgraph graph runs/smoke shops
  fedgraph graph runs/smoke user germany 12626          # top interests and recommendations
  fedgraph graph runs/smoke item germany 22423          # an item's nearest neighbours
  fedgraph graph runs/smoke audience germany "CHRISTMAS DECORATION" --top 50 --csv audience.csv
  fedgraph graph runs/smoke explain germany 12626 22423      # why this item for this user
  fedgraph graph runs/smoke export germany --graphml g.graphml --neo4j neo4j/

RUN may be a run directory (its graph.sqlite is used) or a graph store file.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedgraph",
        description="Federated, privacy-preserving training of e-commerce user interest graphs.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Start with `fedgraph simulate --help`.",
    )
    from fedgraph import version

    parser.add_argument("--version", action="version", version=f"fedgraph {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    sim = sub.add_parser(
        "simulate",
        help="run a federated simulation of partner shops end to end",
        description="Run a federated simulation of partner shops, with baselines, graphs and a report.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_simulate_epilog(),
    )
    sim.add_argument("overrides", nargs="*", metavar="section.key=value", help="configuration overrides")
    sim.add_argument("--config", "-c", type=Path, help="TOML run configuration (default: built-in defaults = configs/default.toml)")
    sim.add_argument("--out", "-o", type=Path, help="new run directory (default: runs/<date>-<time>)")
    sim.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a stopped run from its last checkpoint")
    sim.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")

    graph = sub.add_parser(
        "graph",
        help="query or export the interest graphs a run built",
        description="Show a user's interests and recommendations, an item's neighbours, or export a shop's graph.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG_GRAPH,
    )
    graph.add_argument("run", type=Path, metavar="RUN", help="run directory or graph.sqlite file")
    gsub = graph.add_subparsers(dest="graph_command", metavar="QUERY", required=True)
    gsub.add_parser("shops", help="list shops with graph sizes and model version")
    user = gsub.add_parser("user", help="a user's top interests and recommendations")
    user.add_argument("shop")
    user.add_argument("user")
    user.add_argument("-k", type=int, default=10, help="how many recommendations (default 10)")
    item = gsub.add_parser("item", help="an item's most similar items")
    item.add_argument("shop")
    item.add_argument("item")
    item.add_argument("-k", type=int, default=10, help="how many neighbours (default 10)")
    aud = gsub.add_parser(
        "audience",
        help="the customers most interested in an interest or a free-text topic (CSV export)",
        description=(
            "Rank a shop's customers for marketing. QUERY that names one of the shop's interests (categories) exactly "
            "ranks by the graph's interest edges; any other text is a topic, embedded with the run's text model and "
            "scored by the global model like a new item described by it (needs RUN as a run or state directory)."
        ),
    )
    aud.add_argument("shop")
    aud.add_argument("query", metavar="INTEREST_OR_TOPIC")
    aud.add_argument("--top", type=int, default=20, help="how many customers (default 20)")
    aud.add_argument("--csv", type=Path, help="also write rank,user,score,basis,query rows to this file")
    aud.add_argument("--json", action="store_true", help="machine-readable output")
    why = gsub.add_parser(
        "explain",
        help="why an item was recommended to a user (history items, attention, content share, interests)",
        description=(
            "Take the global model's score of ITEM for USER apart over the user's own history: each history item's "
            "contribution, attention weight and what removing it would do, the content term's share, and the "
            "interests on the path. Without ITEM: the same for each of the user's top recommendations. Needs RUN as "
            "a run or state directory."
        ),
    )
    why.add_argument("shop")
    why.add_argument("user")
    why.add_argument("item", nargs="?", help="the item to explain (default: each of the user's top -k recommendations)")
    why.add_argument("-k", type=int, default=5, help="recommendations explained without ITEM (default 5)")
    why.add_argument("--top", type=int, default=5, help="history items shown per explanation (default 5)")
    why.add_argument("--json", action="store_true", help="machine-readable output")
    export = gsub.add_parser("export", help="export a shop's graph to GraphML and/or Neo4j import files")
    export.add_argument("shop")
    export.add_argument("--graphml", type=Path, help="GraphML output file")
    export.add_argument("--neo4j", type=Path, help="directory for neo4j-admin import CSVs and a Cypher script")
    from fedgraph.deploy.cli import add_deploy_commands  # certs, server, client (partner stores)

    add_deploy_commands(sub)
    from fedgraph.audit.cli import add_audit_command  # privacy audit report of a finished run

    add_audit_command(sub)
    return parser


def _cmd_simulate(args: argparse.Namespace) -> int:
    from fedgraph.config import RunConfig
    from fedgraph.simulation import simulate

    def say(line: str) -> None:
        print(line, flush=True)

    if args.resume:
        if args.config or args.overrides:
            raise SystemExit("fedgraph simulate: --resume continues a run with its own config.toml; drop --config and overrides")
        simulate(None, args.resume, resume=True, say=say)
        return 0
    config = RunConfig.load(args.config, args.overrides)
    if args.print_config:
        print(config.to_toml())
        return 0
    out = args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    say(f"run directory: {out}")
    simulate(config, out, say=say)
    return 0


def _open_store(path: Path):
    """The graph store of a run directory or a shop's state directory (its configured
    ``graph.store``), or a store file given directly (SQLite)."""
    from fedgraph.config import RunConfig
    from fedgraph.graph.stores import STORES

    if path.is_dir():
        configs = [c for c in (path / "config.toml", path / "run" / "config.toml") if c.is_file()]
        config = RunConfig.load(configs[0]) if configs else RunConfig()
        spec = STORES[config.graph.store]
        location = spec.location(path)
    else:
        spec, location = STORES["sqlite"], path
    if not location.exists():
        raise SystemExit(f"fedgraph graph: no graph store at {location}; run `fedgraph simulate` first (it writes RUN_DIR/graph.sqlite)")
    return spec.open(location, False)


def _cmd_graph(args: argparse.Namespace) -> int:
    store = _open_store(args.run)
    if args.graph_command == "shops":
        for shop in store.shops():
            s = store.summary(shop)
            print(f"{shop:<14} " + ", ".join(f"{k}={v}" for k, v in s.items() if k != "shop"))
    elif args.graph_command == "user":
        interests = store.user_interests(args.shop, args.user, k=5)  # a missing user or shop fails here, before any output
        recommendations = store.user_recommendations(args.shop, args.user, k=args.k)
        print(f"user {args.user} in shop {args.shop}")
        print("  top interests:")
        for row in interests:
            print(f"    {row.interest:<20} {row.weight:.3f}")
        print("  recommendations:")
        for row in recommendations:
            print(f"    {row.rank:>2}. {row.item:<10} {row.title:<45.45} [{row.category}] score {row.score:.3f}")
    elif args.graph_command == "item":
        neighbours = store.item_neighbours(args.shop, args.item, k=args.k)
        print(f"items most similar to {args.item} in shop {args.shop}:")
        for row in neighbours:
            print(f"    {row.item:<10} {row.title:<45.45} similarity {row.similarity:.3f}")
    elif args.graph_command == "audience":
        from fedgraph.graph.audience import audience

        if args.top < 1:
            raise SystemExit("fedgraph graph audience: --top must be at least 1")
        if not args.query.strip():
            raise SystemExit(
                "fedgraph graph audience: the query is empty; give an interest of the shop or a topic, e.g. 'garden decoration'"
            )
        found = audience(args.run, store, args.shop, args.query, top=args.top)
        if args.csv is not None:
            if not args.csv.parent.is_dir():
                raise FileNotFoundError(f"the directory {args.csv.parent} does not exist; create it first or choose another path")
            found.write_csv(args.csv)
        if args.json:
            print(json.dumps(found.as_dict(), indent=2))
        else:
            how = "interest edge weight" if found.basis == "interest" else "model score for a new item described by the topic"
            print(f"audience for {args.query!r} in shop {args.shop} ({found.basis}; ranked by {how}; {found.scored_users} customers)")
            for m in found.members:
                print(f"    {m.rank:>3}. {m.user:<16} {m.score:.4f}")
            if args.csv is not None:
                print(f"wrote {len(found.members)} rows to {args.csv}")
    elif args.graph_command == "explain":
        from fedgraph.graph.explain import explain, render
        from fedgraph.graph.serving import open_served_shop

        served = open_served_shop(args.run, args.shop)
        if args.item is not None:
            items = [args.item]
        else:
            items = [r.item for r in store.user_recommendations(args.shop, args.user, k=args.k)]
        found = [explain(served, args.user, i, top=args.top, store=store, hybrid_alpha=served.hybrid_alpha) for i in items]
        if args.json:
            print(json.dumps([e.as_dict() for e in found], indent=2))
        else:
            print("\n\n".join(render(e) for e in found))
    elif args.graph_command == "export":
        from fedgraph.graph import export_graphml, export_neo4j

        if not args.graphml and not args.neo4j:
            raise SystemExit("fedgraph graph export: give --graphml FILE and/or --neo4j DIR")
        for target in (args.graphml, args.neo4j):
            if target is not None and not target.parent.is_dir():
                raise FileNotFoundError(
                    f"the directory {target.parent} does not exist; create it first or choose another path for {target.name}"
                )
        if args.graphml:
            print(f"wrote {export_graphml(store, args.shop, args.graphml)}")
        if args.neo4j:
            files = export_neo4j(store, args.shop, args.neo4j)
            print(f"wrote {len(files)} Neo4j import files to {args.neo4j}")
    return 0


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # `simulate train.rounds=1 --out X data.seed=3`: overrides after an option are still overrides
        if args.command == "simulate" and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            print(
                f"fedgraph {args.command or ''}: unrecognized arguments: {' '.join(extra)} "
                f"(see `fedgraph {args.command or ''} --help`)".replace("  ", " "),
                file=sys.stderr,
            )
            return 2
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return _dispatch(args)
    except BrokenPipeError:  # `fedgraph client status | head`: the reader has gone; stop quietly
        _silence_stdout()
        return 0


def _dispatch(args: argparse.Namespace) -> int:
    from fedgraph.config import ConfigError
    from fedgraph.data.loaders import DataValidationError

    try:
        from fedgraph.deploy.cli import run_deploy_command

        deployed = run_deploy_command(args)
        if deployed is not None:
            return deployed
        if args.command == "simulate":
            return _cmd_simulate(args)
        if args.command == "audit":
            from fedgraph.audit.cli import run_audit_command

            return run_audit_command(args)
        return _cmd_graph(args)
    except KeyboardInterrupt:
        print("\ninterrupted: finished rounds are checkpointed; continue with `fedgraph simulate --resume RUN_DIR`", file=sys.stderr)
        return 130
    except (ConfigError, FileExistsError, FileNotFoundError, DataValidationError) as exc:  # what the user gave: exit 2
        print(f"fedgraph {args.command}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - known failure types print cleanly, others keep the traceback
        from fedgraph.data.loaders import DataValidationError
        from fedgraph.deploy.cli import known_errors
        from fedgraph.federation.run_dir import CheckpointError
        from fedgraph.runtime.simulation_engine import FlowerRunError

        if isinstance(exc, (DataValidationError, CheckpointError, FlowerRunError, KeyError, RuntimeError, *known_errors())):
            print(f"fedgraph {args.command}: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())

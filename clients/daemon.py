"""Entry point of a shop daemon: ``python -m clients.daemon --config shop.toml``.

The same as ``fedgraph client start --config shop.toml``; the work is in
:mod:`fedgraph.deploy.daemon` (SuperNode, warm ClientApp, ingestion, graph updates).
"""

from __future__ import annotations

import argparse
import sys

from fedgraph.deploy.daemon import run_daemon


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clients.daemon", description="Run one shop's fedgraph daemon.")
    parser.add_argument("--config", "-c", required=True, help="the shop's shop.toml")
    return run_daemon(parser.parse_args(argv).config)


if __name__ == "__main__":
    sys.exit(main())

"""Flower ServerApp: wires the configured strategy to fedgraph's round loop."""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedgraph.federation.rounds import run_rounds
from fedgraph.federation.run_dir import RunDir
from fedgraph.federation.secure_aggregation import check_settings
from fedgraph.federation.server_strategy import build_strategy

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    run = RunDir.at(str(context.run_config["run-dir"]))
    if run.config.privacy.secure_aggregation:
        check_settings(run.config, num_shops=len(run.round_shops))
    strategy = build_strategy(run.config, num_shops=len(run.round_shops))
    run_rounds(grid, strategy, run, say=lambda line: print(line, flush=True))

"""FedAvg (McMahan et al., 2017): the updates' mean, weighted by ``weighted_by_key``."""

from __future__ import annotations

from fedgraph.federation.strategies import StrategySpec, register


def _build(fed, common):
    from flwr.serverapp.strategy import FedAvg

    return FedAvg(**common)


register(StrategySpec("fedavg", build=_build, secure_aggregation=True))

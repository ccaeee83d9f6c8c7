"""FedAdam (Reddi et al., 2021): Adam at the server over each round's mean update
(server learning rate ``federation.server_lr``)."""

from __future__ import annotations

from fedgraph.federation.strategies import StrategySpec, register


def _build(fed, common):
    from flwr.serverapp.strategy import FedAdam

    return FedAdam(eta=fed.server_lr, **common)


register(
    StrategySpec(
        "fedadam",
        build=_build,
        secure_aggregation=False,
        why_not="SecAgg+ averages the masked sum (FedAvg) and FedAdam's server optimiser would not be applied",
    )
)

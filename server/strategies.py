"""Strategy selection from the run configuration (FedAvg, FedProx, FedAdam)."""

from __future__ import annotations

from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx, Strategy

from fedgraph.config import RunConfig


def build_strategy(config: RunConfig, num_shops: int) -> Strategy:
    """The configured Flower strategy; every shop is evaluated after every round."""
    fed = config.federation
    common = dict(
        fraction_train=fed.fraction_train,
        fraction_evaluate=1.0,
        min_train_nodes=min(fed.min_train_shops, num_shops),
        min_evaluate_nodes=num_shops,
        min_available_nodes=num_shops,
    )
    if fed.strategy == "fedavg":
        return FedAvg(**common)
    if fed.strategy == "fedprox":
        return FedProx(proximal_mu=fed.proximal_mu, **common)
    if fed.strategy == "fedadam":
        return FedAdam(eta=fed.server_lr, **common)
    raise ValueError(f"unknown federation.strategy {fed.strategy!r}")

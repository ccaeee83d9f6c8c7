"""FedProx (Li et al., 2020): FedAvg at the server; each shop adds the proximal term
``mu/2 * ||w - w_global||^2`` (``federation.proximal_mu``) to its local loss."""

from __future__ import annotations

from fedgraph.federation.strategies import StrategySpec, register


def _build(fed, common):
    from flwr.serverapp.strategy import FedProx

    return FedProx(proximal_mu=fed.proximal_mu, **common)


# The proximal term is the shops' (sent with every round's config); the server step is FedAvg.
register(StrategySpec("fedprox", build=_build, secure_aggregation=True, train_config=lambda fed: {"proximal-mu": float(fed.proximal_mu)}))

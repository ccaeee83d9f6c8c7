"""Flower strategies are registry entries (issue 17.2/17.3): one file each, declaring whether
SecAgg+ can run them; the config honours or refuses every combination."""

from __future__ import annotations

import pytest

from fedgraph.config import ConfigError, RunConfig
from fedgraph.federation.strategies import STRATEGIES, StrategySpec


def test_the_shipped_strategies_are_registered():
    assert {"fedavg", "fedprox", "fedadam"} <= set(STRATEGIES)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_each_strategy_is_honoured_or_refused_under_secure_aggregation(name):
    overrides = ["privacy.secure_aggregation=true", f"federation.strategy={name}"]
    if STRATEGIES[name].secure_aggregation:
        assert RunConfig.load(overrides=overrides).federation.strategy == name
    else:
        with pytest.raises(ConfigError, match=f"{name}.*secure aggregation"):
            RunConfig.load(overrides=overrides)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_each_strategy_builds_the_flower_strategy_it_names(name):
    from fedgraph.federation.server_strategy import build_strategy

    strategy = build_strategy(RunConfig.load(overrides=[f"federation.strategy={name}"]), num_shops=3)
    assert type(strategy).__name__.lower() == name


def test_a_new_strategy_is_one_registry_entry(monkeypatch):
    from flwr.serverapp.strategy import FedAvgM

    from fedgraph.federation.server_strategy import build_strategy

    spec = StrategySpec(
        "fedavgm",
        build=lambda fed, common: FedAvgM(server_learning_rate=fed.server_lr, **common),
        secure_aggregation=False,
        why_not="its server momentum needs each round's aggregate",
    )
    monkeypatch.setitem(STRATEGIES, spec.name, spec)
    assert isinstance(build_strategy(RunConfig.load(overrides=["federation.strategy=fedavgm"]), num_shops=2), FedAvgM)
    with pytest.raises(ConfigError, match="fedavgm.*secure aggregation.*server momentum"):
        RunConfig.load(overrides=["privacy.secure_aggregation=true", "federation.strategy=fedavgm"])
    with pytest.raises(ConfigError, match="federation.strategy must be one of fedadam, fedavg, fedavgm, fedprox"):
        RunConfig.load(overrides=["federation.strategy=krum"])


def test_what_a_strategy_sends_the_shops_each_round_comes_from_its_registry_entry(monkeypatch):
    """Review of 7dd27c0: the round loop spelled strategy == "fedprox" to send proximal-mu, so a
    new shop-side strategy registered as a file would have trained without its term."""
    from fedgraph.federation.rounds import round_train_config

    assert dict(round_train_config(RunConfig.load(overrides=["federation.strategy=fedprox", "federation.proximal_mu=0.3"]))) == {
        "proximal-mu": 0.3
    }
    assert dict(round_train_config(RunConfig())) == {}
    spec = StrategySpec(
        "fedprox2",
        build=STRATEGIES["fedprox"].build,
        secure_aggregation=True,
        train_config=lambda fed: {"proximal-mu": 2 * fed.proximal_mu},
    )
    monkeypatch.setitem(STRATEGIES, spec.name, spec)
    config = RunConfig.load(overrides=["federation.strategy=fedprox2", "federation.proximal_mu=0.25"])
    assert dict(round_train_config(config)) == {"proximal-mu": 0.5}

"""The Flower strategies a run can name in ``federation.strategy``: a registry.

Each strategy is one file in this package that calls :func:`register` with a
:class:`StrategySpec`; the package imports every file in it, so adding a strategy is adding a
file (plus, at most, a config default). The spec says whether Flower's SecAgg+ workflow can run
it: under secure aggregation the server sees only the masked *sum* of the shops' updates and
averages it (FedAvg), so a strategy whose server step needs more (e.g. FedAdam's optimiser over
each round's aggregate) is refused by :meth:`fedgraph.config.RunConfig.validate` instead of
silently running as FedAvg.

This module imports nothing from fedgraph, so the config can read the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fedgraph.registry import Registry, import_entries


@dataclass(frozen=True)
class StrategySpec:
    """One strategy.

    Attributes:
        name: the ``federation.strategy`` value.
        build: ``build(federation_config, common)`` -> the Flower strategy; ``common`` holds the
            keyword arguments every fedgraph strategy takes (fractions, minimum shops,
            ``weighted_by_key``).
        secure_aggregation: whether SecAgg+ runs it unchanged (the server step is a mean of the
            updates; shop-side terms such as FedProx's are fine).
        why_not: with ``secure_aggregation=False``, what SecAgg+ would lose (shown in the error).
        train_config: ``train_config(federation_config) -> {key: number}`` sent to every shop
            with each round's training message (the shop-side part of the strategy, e.g.
            FedProx's ``proximal-mu``, read by :func:`fedgraph.federation.shop_side.shop_train`);
            None: nothing.
    """

    name: str
    build: Callable[[Any, dict[str, Any]], Any]
    secure_aggregation: bool
    why_not: str = ""
    train_config: Callable[[Any], dict[str, float]] | None = None


STRATEGIES: Registry[StrategySpec] = Registry("federation strategy")


#: Add an entry (a second, different one of the same name is an error).
register = STRATEGIES.register


import_entries(__name__, __path__)

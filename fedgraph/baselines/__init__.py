"""The methods federated training is measured against: a registry, one file per baseline.

Every tunable method makes its choices on the **validation** split (each user's latest items of
the training period, ``run.shop_file``) and is then scored once on the **test** split
(``run.final_shop_file``: the whole training period as history, the test items held out).

Each baseline is a file in this package that calls :func:`register` with a :class:`Baseline`
(its name in ``evaluation.baselines``, its report label and colour, a line for ``--help``, and a
``run(context) -> {shop: figures}`` function). The package imports every such file, so adding a
baseline is adding a file, plus, if it should run by default, its name in the config default
(:data:`fedgraph.config.DEFAULT_BASELINES`, ``configs/default.toml``). The report, the plot, the
``--help`` text and the name check all read this registry.

The package itself is light (no torch): a baseline file imports what it computes with inside
its ``run`` function; the shared implementations live in :mod:`fedgraph.baselines.methods`
(import them from there: ``fedgraph.baselines.popularity`` is the baseline's file, not the
function).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fedgraph.registry import Registry, import_entries

if TYPE_CHECKING:
    import torch

    from fedgraph.federation.run_dir import RunDir
    from fedgraph.shop import ShopData


@dataclass
class BaselineContext:
    """What a baseline's ``run`` gets: the run, every shop's training view (held-out =
    validation) and test view, in the run's shop order, the device and the progress printer."""

    run: RunDir
    shops: list[ShopData]
    finals: list[ShopData]
    device: torch.device
    say: Callable[[str], None]


@dataclass(frozen=True)
class Baseline:
    """One baseline.

    Attributes:
        name: its ``evaluation.baselines`` word and ``metrics.json`` key.
        label: its row in the report table and plot.
        colour: its colour in ``metrics.png``.
        order: its place in the report (the federated rows sit at 70 and 75).
        explain: one line for ``fedgraph simulate --help``: what it is and what data it uses.
        run: ``run(context) -> {shop: {"recall@K", "ndcg@K", "users", chosen settings...}}``.
        dp_only: run only under ``privacy.enabled`` (a DP reference).
    """

    name: str
    label: str
    colour: str
    order: int
    explain: str
    run: Callable[[BaselineContext], dict[str, dict[str, Any]]]
    dp_only: bool = False


BASELINES: Registry[Baseline] = Registry("baseline")


#: Add an entry (a second, different one of the same name is an error).
register = BASELINES.register


def in_report_order() -> list[Baseline]:
    return sorted(BASELINES.values(), key=lambda b: (b.order, b.name))


def check_names(names: Iterable[str]) -> None:
    """Raise :class:`~fedgraph.config.ConfigError` for a name in ``evaluation.baselines`` that no
    file registers."""
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        from fedgraph.config import ConfigError

        raise ConfigError(
            f"evaluation.baselines: unknown {', '.join(map(repr, unknown))}; the registered baselines are "
            f"{', '.join(b.name for b in in_report_order())} (fedgraph simulate --help explains each)"
        )


import_entries(__name__, __path__, skip=("methods",))  # methods: shared implementations, imported on first use (torch)

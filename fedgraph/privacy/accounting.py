"""Privacy accounting for user-level DP-SGD, with Opacus' accountants.

The mechanism each shop runs is the Poisson-subsampled Gaussian mechanism of DP-SGD
(Abadi et al., 2016): at every local step each user of the shop is included independently
with probability ``q`` (the sample rate), each included user's whole gradient is clipped to
L2 norm ``C`` and Gaussian noise of standard deviation ``sigma * C`` is added to the sum.
Its privacy loss over many steps and rounds is composed by an accountant from Opacus:

- ``rdp``: Rényi DP (Mironov, 2017; Mironov, Talwar & Zhang, 2019), Opacus'
  :class:`~opacus.accountants.RDPAccountant`. Always valid for this mechanism; slightly loose.
- ``prv``: privacy loss random variables (Gopi, Lee & Wutschitz, 2021), Opacus'
  :class:`~opacus.accountants.PRVAccountant`; we report its *upper* bound (it already
  includes the numerical error ``eps_error``). Tighter than RDP, but only used where its
  numerics are sound: ``0 < q < 1`` and a finite result. Otherwise RDP is used.

A history is a list of ``(noise_multiplier, sample_rate, steps)`` triples, the format of
Opacus' accountants, so the figures here are Opacus' own for the same parameters.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Opacus (and torch under it) is imported where an ε is computed, not with this module: reading a
# ledger (``fedgraph client status``) must stay quick.

ACCOUNTANTS = ("rdp", "prv")

History = Sequence[tuple[float, float, int]]


class BudgetError(ValueError):
    """A privacy budget cannot be met with the given settings."""


def _clean(history: Iterable[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """Drop empty entries and merge entries of the same mechanism (same σ and q) by adding
    their steps.

    Composition does not depend on order (RDP curves add; PRV composition convolves), so
    merging is exact, and it keeps the cost of an ε query flat over a long run: a ledger holds
    one entry per round, and both Opacus accountants cost time linear in the number of entries
    (figures: simulations/RESULTS.md, 'Implementation measurements').
    """
    merged: dict[tuple[float, float], int] = {}
    for s, q, n in history:
        if int(n) > 0:
            key = (float(s), float(q))
            merged[key] = merged.get(key, 0) + int(n)
    return [(s, q, n) for (s, q), n in merged.items()]


def prv_applies(history: History) -> bool:
    """Whether the PRV accountant's numerics are sound for this history (``0 < q < 1``, sigma > 0)."""
    hist = _clean(history)
    return bool(hist) and all(0.0 < q < 1.0 and s > 0 for s, q, _ in hist)


def epsilon(history: History, delta: float, accountant: str = "rdp") -> float:
    """ε spent by ``history`` at ``delta`` under ``accountant`` (0 for an empty history).

    ``prv`` falls back to ``rdp`` where :func:`prv_applies` is false.
    """
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"unknown accountant {accountant!r}; choose one of {', '.join(ACCOUNTANTS)}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    hist = _clean(history)
    if not hist:
        return 0.0
    if any(s <= 0 for s, _, _ in hist):
        return math.inf
    if accountant == "prv" and prv_applies(hist):
        value = _prv_epsilon(tuple(hist), delta)
        if math.isfinite(value):
            return value
    # Opacus' RDPAccountant.get_epsilon, with each mechanism's per-step RDP curve cached: the
    # RDP of n steps is n times that of one, and a shop asks about the same (σ, q) every round.
    orders, analysis = _rdp_orders_and_analysis()
    rdp = sum(n * _rdp_per_step(s, q) for s, q, n in hist)
    with warnings.catch_warnings():
        # "Optimal order is the largest alpha": the bound is valid, only possibly loose.
        warnings.simplefilter("ignore", UserWarning)
        eps, _ = analysis.get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
    return float(eps)


def _rdp_orders_and_analysis() -> tuple[Sequence[float], Any]:
    """Opacus' default RDP orders and its RDP analysis module (imported on first use)."""
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis import rdp as rdp_analysis

    return RDPAccountant.DEFAULT_ALPHAS, rdp_analysis


@functools.lru_cache(maxsize=256)
def _prv_epsilon(history: tuple[tuple[float, float, int], ...], delta: float) -> float:
    """Opacus' PRV ε of a merged history (NaN where its numerics fail). Cached: a shop asks
    for the same history twice a round (the projection before training, the record after)."""
    from opacus.accountants import PRVAccountant

    acc = PRVAccountant()
    acc.history = list(history)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            return float(acc.get_epsilon(delta=delta))
        except (ValueError, FloatingPointError, OverflowError):
            return math.nan


@functools.lru_cache(maxsize=4096)
def _rdp_per_step(noise_multiplier: float, sample_rate: float) -> np.ndarray:
    """RDP of one step of the subsampled Gaussian mechanism at Opacus' default orders (read-only)."""
    orders, analysis = _rdp_orders_and_analysis()
    curve = analysis.compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=orders)
    curve = np.asarray(curve, dtype=np.float64)
    curve.setflags(write=False)
    return curve


@dataclass(frozen=True)
class Spent:
    """ε of one history under both accountants, and which one is reported."""

    rdp: float
    prv: float | None  # None where PRV does not apply
    reported: float
    reported_by: str

    def as_dict(self) -> dict[str, float | str | None]:
        return {"epsilon": self.reported, "epsilon_accountant": self.reported_by, "epsilon_rdp": self.rdp, "epsilon_prv": self.prv}


def spent(history: History, delta: float, accountant: str = "rdp") -> Spent:
    """ε under RDP and PRV; the reported one is the configured ``accountant``'s (RDP where PRV does not apply)."""
    rdp = epsilon(history, delta, "rdp")
    prv = epsilon(history, delta, "prv") if prv_applies(history) else None
    if accountant == "prv" and prv is not None:
        return Spent(rdp=rdp, prv=prv, reported=prv, reported_by="prv")
    return Spent(rdp=rdp, prv=prv, reported=rdp, reported_by="rdp")


def noise_multiplier_for(target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str = "rdp") -> float:
    """The smallest noise multiplier (to 0.01 in ε) whose ``steps`` steps at ``sample_rate`` stay within ``target_epsilon``.

    Opacus' :func:`~opacus.accountants.utils.get_noise_multiplier`; PRV is used only where it applies.
    """
    if not math.isfinite(target_epsilon):
        return 0.0
    if target_epsilon <= 0:
        raise BudgetError(f"target epsilon must be positive, got {target_epsilon}")
    if steps <= 0:
        raise BudgetError("cannot plan noise for zero steps")
    from opacus.accountants.utils import get_noise_multiplier

    mechanism = accountant if accountant == "prv" and 0 < sample_rate < 1 else "rdp"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            # "Optimal order is the largest alpha" for the tiny σ the search tries first: the
            # bound is valid (only loose, so never too little noise).
            warnings.simplefilter("ignore", UserWarning)
            sigma = float(
                get_noise_multiplier(
                    target_epsilon=target_epsilon, target_delta=delta, sample_rate=sample_rate, steps=int(steps), accountant=mechanism
                )
            )
    except ValueError as exc:
        raise BudgetError(
            f"no noise level reaches ε={target_epsilon} at δ={delta:g} over {steps} steps at sample rate {sample_rate:.4g}: {exc}"
        ) from exc
    # get_noise_multiplier binary-searches to a tolerance; make sure the plan really fits.
    while epsilon([(sigma, sample_rate, steps)], delta, mechanism) > target_epsilon:
        sigma *= 1.01
    return sigma


def default_delta(num_users: int) -> float:
    """δ below 1/n: ``min(1e-5, 0.1 / n)`` for a shop of ``n`` users."""
    return min(1e-5, 0.1 / max(1, int(num_users)))

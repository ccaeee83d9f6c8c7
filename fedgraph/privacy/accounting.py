"""Privacy accounting for user-level DP-SGD, with Opacus' accountants.

The mechanism each shop runs is the Poisson-subsampled Gaussian mechanism of DP-SGD
(Abadi et al., 2016): at every local step each user of the shop is included independently
with probability ``q`` (the sample rate), each included user's whole gradient is clipped to
L2 norm ``C`` and Gaussian noise of standard deviation ``sigma * C`` is added to the sum.
Its privacy loss over many steps and rounds is composed by an accountant of the registry
:mod:`fedgraph.privacy.accountants` (``rdp``: Opacus' RDP analysis, always valid; ``prv``:
Opacus' PRV accountant, tighter, where its numerics are sound; one file each).

A history is a list of ``(noise_multiplier, sample_rate, steps)`` triples, the format of
Opacus' accountants, so the figures here are Opacus' own for the same parameters.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedgraph.privacy.accountants import ACCOUNTANTS, FALLBACK

# Opacus (and torch under it) is imported where an ε is computed, not with this module: reading a
# ledger (``fedgraph client status``) must stay quick.

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


def _known(accountant: str) -> None:
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"unknown accountant {accountant!r}; choose one of {', '.join(sorted(ACCOUNTANTS))}")


def epsilon(history: History, delta: float, accountant: str = FALLBACK) -> float:
    """ε spent by ``history`` at ``delta`` under ``accountant`` (0 for an empty history, inf with
    no noise). An accountant whose numerics do not apply to the history (or fail) falls back to
    ``rdp``.

    Raises:
        ValueError: an unregistered accountant, or ``delta`` outside (0, 1).
    """
    _known(accountant)
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    hist = _clean(history)
    if not hist:
        return 0.0
    if any(s <= 0 for s, _, _ in hist):
        return math.inf
    spec = ACCOUNTANTS[accountant]
    if accountant != FALLBACK and spec.applies(hist):
        value = spec.epsilon(tuple(hist), delta)
        if math.isfinite(value):
            return value
    return float(ACCOUNTANTS[FALLBACK].epsilon(tuple(hist), delta))


@dataclass(frozen=True)
class Spent:
    """ε of one history under every registered accountant (``by_accountant``: ``None`` where an
    accountant's numerics do not apply) and the reported one: the configured accountant's
    (``rdp``'s where it does not apply). Every ledger entry records all of them by name."""

    by_accountant: Mapping[str, float | None]
    reported: float
    reported_by: str

    @property
    def rdp(self) -> float:
        """ε under ``rdp``, which applies to every history."""
        return float(self.by_accountant[FALLBACK])

    def as_dict(self) -> dict[str, Any]:
        return {"epsilon": self.reported, "epsilon_accountant": self.reported_by, "epsilon_by_accountant": dict(self.by_accountant)}


def spent(history: History, delta: float, accountant: str = FALLBACK) -> Spent:
    """ε under every registered accountant, and the reported ε: the configured ``accountant``'s
    where it applies (and is finite), else RDP's."""
    _known(accountant)
    hist = _clean(history)
    rdp = epsilon(history, delta, FALLBACK)
    by_name: dict[str, float | None] = {}
    for name, spec in sorted(ACCOUNTANTS.items()):
        if name == FALLBACK:
            by_name[name] = rdp
            continue
        value = spec.epsilon(tuple(hist), delta) if hist and all(s > 0 for s, _, _ in hist) and spec.applies(hist) else math.nan
        by_name[name] = float(value) if math.isfinite(value) else (0.0 if not hist else None)
    own = by_name.get(accountant)
    if own is None:
        return Spent(by_name, rdp, FALLBACK)
    return Spent(by_name, float(own), accountant)


def epsilons_of(entry: Mapping[str, Any], prefix: str = "epsilon") -> dict[str, float | None]:
    """The ε by accountant name a ledger entry (or a plan, with ``prefix="planned_epsilon"``)
    records: ``{prefix}_by_accountant``, or, in ledgers written before that field, the two fixed
    fields ``{prefix}_rdp`` and ``{prefix}_prv``."""
    keyed = entry.get(f"{prefix}_by_accountant")
    if keyed is None:
        keyed = {name: entry[f"{prefix}_{name}"] for name in ("rdp", "prv") if f"{prefix}_{name}" in entry}
    return {str(k): (None if v is None else float(v)) for k, v in keyed.items()}


def noise_multiplier_for(target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str = FALLBACK) -> float:
    """The smallest noise multiplier (to 0.01 in ε) whose ``steps`` steps at ``sample_rate`` stay within ``target_epsilon``.

    Opacus' :func:`~opacus.accountants.utils.get_noise_multiplier` for an accountant Opacus knows
    (``rdp`` where the configured one cannot plan at this sample rate), else a bisection on the
    accountant's own ε.

    Raises:
        BudgetError: the target is not positive, ``steps`` is 0, or no noise level reaches it.
    """
    if not math.isfinite(target_epsilon):
        return 0.0
    if target_epsilon <= 0:
        raise BudgetError(f"target epsilon must be positive, got {target_epsilon}")
    if steps <= 0:
        raise BudgetError("cannot plan noise for zero steps")
    _known(accountant)
    spec = ACCOUNTANTS[accountant]
    mechanism = accountant if spec.plans_at(sample_rate) else FALLBACK
    opacus_name = ACCOUNTANTS[mechanism].opacus_name
    if opacus_name is None:
        sigma = _bisect_sigma(target_epsilon, delta, sample_rate, steps, mechanism)
    else:
        from opacus.accountants.utils import get_noise_multiplier

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                # "Optimal order is the largest alpha" for the tiny σ the search tries first: the
                # bound is valid (only loose, so never too little noise).
                warnings.simplefilter("ignore", UserWarning)
                sigma = float(
                    get_noise_multiplier(
                        target_epsilon=target_epsilon,
                        target_delta=delta,
                        sample_rate=sample_rate,
                        steps=int(steps),
                        accountant=opacus_name,
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


def _bisect_sigma(target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str) -> float:
    """The smallest σ (to 0.01 in ε) with ε ≤ target under ``accountant``, by bisection."""
    low, high = 0.0, 1.0
    while epsilon([(high, sample_rate, steps)], delta, accountant) > target_epsilon:
        low, high = high, high * 2
        if high > 1e6:
            raise BudgetError(f"no noise level reaches ε={target_epsilon} at δ={delta:g} over {steps} steps (accountant {accountant})")
    while epsilon([(high, sample_rate, steps)], delta, accountant) < target_epsilon - 0.01 and high - low > 1e-4:
        mid = (low + high) / 2
        if mid > 0 and epsilon([(mid, sample_rate, steps)], delta, accountant) <= target_epsilon:
            high = mid
        else:
            low = mid
    return high


def default_delta(num_users: int) -> float:
    """δ below 1/n: ``min(1e-5, 0.1 / n)`` for a shop of ``n`` users."""
    return min(1e-5, 0.1 / max(1, int(num_users)))

"""``prv``: privacy loss random variables (Gopi, Lee & Wutschitz, 2021), Opacus'
:class:`~opacus.accountants.PRVAccountant`; its *upper* bound is reported (it already includes the
numerical error ``eps_error``). Tighter than RDP, used only where its numerics are sound:
``0 < q < 1`` and a finite result (elsewhere ``rdp``)."""

from __future__ import annotations

import functools
import math
import warnings

from fedgraph.privacy.accountants import Accountant, History, register


def applies(history: History) -> bool:
    """Whether PRV's numerics are sound for this history (``0 < q < 1``, σ > 0)."""
    return bool(history) and all(0.0 < q < 1.0 and s > 0 for s, q, _ in history)


@functools.lru_cache(maxsize=256)
def epsilon(history: tuple[tuple[float, float, int], ...], delta: float) -> float:
    """Opacus' PRV ε of a merged history (NaN where its numerics fail). Cached: a shop asks for
    the same history twice a round (the projection before training, the record after)."""
    from opacus.accountants import PRVAccountant

    acc = PRVAccountant()
    acc.history = list(history)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            return float(acc.get_epsilon(delta=delta))
        except (ValueError, FloatingPointError, OverflowError):
            return math.nan


register(
    Accountant(
        "prv",
        description="privacy loss random variables (Gopi et al. 2021), Opacus' PRVAccountant (upper bound)",
        applies=applies,
        epsilon=epsilon,
        opacus_name="prv",
        plans_at=lambda sample_rate: 0 < sample_rate < 1,
    )
)

"""``rdp``: Rényi DP (Mironov, 2017; Mironov, Talwar & Zhang, 2019) with Opacus' RDP analysis at
its default orders. Always valid for the subsampled Gaussian mechanism; slightly loose."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from fedgraph.privacy.accountants import Accountant, register


def _orders_and_analysis() -> tuple[Sequence[float], Any]:
    """Opacus' default RDP orders and its RDP analysis module (imported on first use)."""
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis import rdp as rdp_analysis

    return RDPAccountant.DEFAULT_ALPHAS, rdp_analysis


@functools.lru_cache(maxsize=4096)
def _per_step(noise_multiplier: float, sample_rate: float) -> np.ndarray:
    """RDP of one step of the subsampled Gaussian mechanism at Opacus' default orders (read-only).
    Cached: the RDP of n steps is n times that of one, and a shop asks about the same (σ, q) every round."""
    orders, analysis = _orders_and_analysis()
    curve = analysis.compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=orders)
    curve = np.asarray(curve, dtype=np.float64)
    curve.setflags(write=False)
    return curve


def epsilon(history: tuple[tuple[float, float, int], ...], delta: float) -> float:
    """Opacus' ``RDPAccountant.get_epsilon`` for ``history``."""
    orders, analysis = _orders_and_analysis()
    rdp = sum(n * _per_step(s, q) for s, q, n in history)
    with warnings.catch_warnings():
        # "Optimal order is the largest alpha": the bound is valid, only possibly loose.
        warnings.simplefilter("ignore", UserWarning)
        eps, _ = analysis.get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
    return float(eps)


register(
    Accountant(
        "rdp",
        description="Rényi DP (Mironov 2017), Opacus' RDPAccountant",
        applies=lambda history: True,
        epsilon=epsilon,
        opacus_name="rdp",
    )
)

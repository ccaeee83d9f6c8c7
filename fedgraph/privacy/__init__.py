"""Differential privacy: DP-SGD settings, accounting with Opacus, the per-shop ledger.

See ``PRIVACY.md`` at the repository root for what is protected and how.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedgraph.privacy.accounting import (
    ACCOUNTANTS,
    BudgetError,
    Spent,
    default_delta,
    epsilon,
    noise_multiplier_for,
    spent,
)
from fedgraph.privacy.ledger import LedgerTamperedError, PrivacyLedger

GRAD_SAMPLE_MODES = ("ghost", "hooks")


@dataclass(frozen=True)
class DPSettings:
    """One shop's DP-SGD step: Poisson rate ``sample_rate``, clip ``max_grad_norm``, noise ``noise_multiplier`` × clip.

    ``grad_sample_mode`` is ``ghost`` (Opacus' ghost clipping: per-user gradient *norms*
    without materialising per-user gradients) or ``hooks`` (per-user gradients materialised;
    for comparison). ``noise_seed`` seeds the Poisson sampling and the noise (reproducible
    simulations); ``None`` draws both from the operating system's entropy.
    """

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    delta: float
    accountant: str = "rdp"
    grad_sample_mode: str = "ghost"
    noise_seed: int | None = None

    def __post_init__(self) -> None:
        if self.noise_multiplier < 0:
            raise ValueError(f"noise_multiplier must be >= 0, got {self.noise_multiplier}")
        if self.max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        if not 0 < self.sample_rate <= 1:
            raise ValueError(f"sample_rate must lie in (0, 1], got {self.sample_rate}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must lie in (0, 1), got {self.delta}")
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {self.accountant!r}")
        if self.grad_sample_mode not in GRAD_SAMPLE_MODES:
            raise ValueError(f"grad_sample_mode must be one of {GRAD_SAMPLE_MODES}, got {self.grad_sample_mode!r}")


__all__ = [
    "ACCOUNTANTS",
    "BudgetError",
    "DPSettings",
    "GRAD_SAMPLE_MODES",
    "LedgerTamperedError",
    "PrivacyLedger",
    "Spent",
    "default_delta",
    "epsilon",
    "noise_multiplier_for",
    "spent",
]

"""Client-level DP at the server: accounting for Flower's server-side clipping wrappers.

With ``privacy.client_dp = "fixed"`` Flower's
:class:`~flwr.serverapp.strategy.DifferentialPrivacyServerSideFixedClipping` clips each
shop's update to norm ``C``, sums the clipped updates over the ``m`` sampled shops and divides
by ``m`` (equal weights; a sampled shop that does not reply counts as a zero update, see
:func:`fedgraph.federation.server_strategy.divide_by_sampled`: dividing by the number of replies instead would
make the sensitivity up to ``2C/r``) and adds ``N(0, (σC/m)²)``; ``"adaptive"`` (Andrew et al., 2021) also adapts ``C`` from a noisy count
of clipped updates. The unit is **one whole shop** (add/remove one shop, fixed
denominator ``m``). With ``"adaptive"`` Flower shrinks the update's noise multiplier to
``z_Δ = (σ⁻² − (2σ_b)⁻²)^-½`` as if its noisy count of clipped updates (``σ_b = m/20``) had
sensitivity ½ (centred bits, as in the paper); it noises the plain 0/1 count, sensitivity 1. The
two releases compose as one Gaussian mechanism of multiplier ``z = (z_Δ⁻² + σ_b⁻²)^-½ < σ``
(:func:`effective_noise_multiplier`), which is what the ledger accounts. Flower samples a fixed number of shops without replacement; we claim no
amplification from that sampling (``q = 1``), which is conservative. Each round is one
Gaussian release of multiplier ``σ``; ε over ``T`` rounds is Opacus' RDP accountant for
``(σ, 1, T)`` at ``privacy.client_delta``.

The server keeps its own ledger (:class:`~fedgraph.privacy.PrivacyLedger`) next to the
shops', with the plan and one entry per aggregated round.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedgraph.privacy.accounting import epsilon
from fedgraph.privacy.ledger import PrivacyLedger

if TYPE_CHECKING:
    from fedgraph.config import RunConfig

#: Metric every shop sends with its update so that client-level DP can average with equal weights.
UNIFORM_WEIGHT_KEY = "shop-weight"


def sampled_shops_per_round(config: RunConfig, num_shops: int) -> int:
    """How many shops Flower's FedAvg samples per round (its own rule)."""
    fed = config.federation
    return max(int(num_shops * fed.fraction_train), min(fed.min_train_shops, num_shops))


def effective_noise_multiplier(config: RunConfig, num_shops: int) -> float:
    """The Gaussian multiplier one round of the configured client-level DP costs (see module docs).

    ``"fixed"``: ``σ``. ``"adaptive"``: the update at Flower's reduced ``z_Δ`` and the count of
    clipped updates at ``σ_b`` (sensitivity 1) composed, ``(z_Δ⁻² + σ_b⁻²)^-½``.
    """
    p = config.privacy
    sigma = float(p.client_noise_multiplier)
    if p.client_dp != "adaptive" or sigma <= 0:
        return sigma
    from flwr.serverapp.strategy.dp_adaptive_clipping import compute_adaptive_noise_params

    count_std, update_z = compute_adaptive_noise_params(sigma, sampled_shops_per_round(config, num_shops), None)
    return float((update_z**-2 + count_std**-2) ** -0.5)


class ServerPrivacyLedger:
    """The server's client-level DP ledger in ``directory``."""

    def __init__(self, directory: str | Path, config: RunConfig, num_shops: int) -> None:
        self.ledger = PrivacyLedger(directory)
        self.config = config
        p = config.privacy
        entries = self.ledger.verify(repair=True)
        self.noise_multiplier = effective_noise_multiplier(config, num_shops)
        plan = {
            "client_dp": p.client_dp,
            "noise_multiplier": float(p.client_noise_multiplier),
            "clipping_norm": float(p.client_clipping_norm),
            "delta": float(p.client_delta),
            "sampled_shops": sampled_shops_per_round(config, num_shops),
            "shops": int(num_shops),
            "effective_noise_multiplier": self.noise_multiplier,
        }
        if entries:
            old = {k: entries[0].get(k) for k in plan}
            if old != plan:
                raise ValueError(f"{self.ledger.path}: client-level DP settings changed since the run started ({old} → {plan})")
        else:
            self.ledger.append(
                "plan",
                **plan,
                unit="one whole shop (add/remove, fixed denominator)",
                accountant="rdp",
                mechanism=f"Flower server-side {p.client_dp} clipping + Gaussian noise, equal shop weights, no sampling amplification",
                planned_rounds=int(config.train.rounds),
                planned_epsilon=self.epsilon_after(int(config.train.rounds)),
            )

    def epsilon_after(self, releases: int) -> float:
        p = self.config.privacy
        if releases <= 0:
            return 0.0
        if self.noise_multiplier <= 0:
            return math.inf
        return epsilon([(self.noise_multiplier, 1.0, int(releases))], float(p.client_delta), "rdp")

    def releases(self) -> int:
        return sum(1 for e in self.ledger.verify() if e.get("kind") == "round")

    def record_round(self, server_round: int, model_version: str, shops: int, clipping_norm: float) -> dict[str, Any]:
        n = self.releases() + 1
        return self.ledger.append(
            "round",
            round=int(server_round),
            model_version=model_version,
            shops_aggregated=int(shops),
            clipping_norm=float(clipping_norm),
            noise_multiplier=float(self.config.privacy.client_noise_multiplier),
            effective_noise_multiplier=self.noise_multiplier,
            delta=float(self.config.privacy.client_delta),
            releases=n,
            epsilon=self.epsilon_after(n),
            accountant="rdp",
        )

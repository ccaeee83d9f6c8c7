"""The server's Flower strategy for a run: the registered ``federation.strategy``
(:mod:`fedgraph.federation.strategies`), optionally wrapped in Flower's server-side
client-level DP (fixed or adaptive clipping, noise from the CSPRNG)."""

from __future__ import annotations

from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    Strategy,
)

from fedgraph.config import RunConfig
from fedgraph.federation.strategies import STRATEGIES
from fedgraph.privacy.client_level import UNIFORM_WEIGHT_KEY, sampled_shops_per_round


class _SecureNoise:
    """Flower's server-side DP wrappers with their Gaussian noise (and adaptive clipping's noisy
    count) drawn from :class:`fedgraph.privacy.csprng.SecureRandom` instead of ``np.random``
    (Mersenne Twister: predictable from its state). Same standard deviations as Flower's."""

    _rng = None

    def _secure(self):
        from fedgraph.privacy.csprng import SecureRandom

        if self._rng is None:
            self._rng = SecureRandom()
        return self._rng

    def _add_noise_to_aggregated_arrays(self, aggregated):
        import numpy as np
        import torch
        from flwr.app import Array, ArrayRecord
        from flwr.supercore.differential_privacy import compute_stdv

        from fedgraph.privacy.csprng import secure_noise_like

        std = compute_stdv(self.noise_multiplier, self.clipping_norm, self.num_sampled_clients)
        noisy = {}
        for k, v in zip(aggregated.keys(), aggregated.to_numpy_ndarrays(), strict=True):
            noise = secure_noise_like(torch.zeros(v.shape, dtype=torch.float64), std, self._secure()).numpy()
            noisy[k] = Array(np.asarray(v + noise.astype(v.dtype)))
        return ArrayRecord(noisy)

    def _noisy_fraction(self, count: int, total: int) -> float:
        return float(count + self.clipped_count_stddev * self._secure().normal(1)[0]) / float(total)


class SecureFixedClipping(_SecureNoise, DifferentialPrivacyServerSideFixedClipping):
    """:class:`DifferentialPrivacyServerSideFixedClipping` with CSPRNG noise."""


class SecureAdaptiveClipping(_SecureNoise, DifferentialPrivacyServerSideAdaptiveClipping):
    """:class:`DifferentialPrivacyServerSideAdaptiveClipping` with CSPRNG noise and noisy count."""


def build_strategy(config: RunConfig, num_shops: int) -> Strategy:
    """The configured Flower strategy; every connected shop is asked to train and evaluate each round.

    With ``federation.weights(...) == "uniform"`` shops count the same (they send no user counts).
    With ``privacy.client_dp`` the strategy averages shops with equal weights (a shop's
    influence on the mean must be at most ``C / m`` for the noise to cover it) and is wrapped
    in Flower's server-side clipping + Gaussian noise.
    """
    fed, privacy = config.federation, config.privacy
    common = dict(
        fraction_train=fed.fraction_train,
        fraction_evaluate=1.0,
        # Flower waits for min_available_nodes without a bound: ask for no more than a round
        # needs; the round loop bounds the wait (fedgraph.federation.rounds.wait_for_shops) and
        # every connected shop is still sampled (fraction 1.0).
        min_train_nodes=min(fed.min_train_shops, num_shops),
        min_evaluate_nodes=min(fed.min_train_shops, num_shops),
        min_available_nodes=min(fed.min_train_shops, num_shops),
    )
    if privacy.client_dp != "off" or fed.weights(privacy) == "uniform":
        common["weighted_by_key"] = UNIFORM_WEIGHT_KEY
    if fed.strategy not in STRATEGIES:
        raise ValueError(f"unknown federation.strategy {fed.strategy!r}; registered: {', '.join(sorted(STRATEGIES))}")
    strategy: Strategy = STRATEGIES[fed.strategy].build(fed, common)
    sampled = sampled_shops_per_round(config, num_shops)
    if privacy.client_dp == "fixed":
        dp: Strategy = SecureFixedClipping(
            strategy,
            noise_multiplier=privacy.client_noise_multiplier,
            clipping_norm=privacy.client_clipping_norm,
            num_sampled_clients=sampled,
        )
    elif privacy.client_dp == "adaptive":
        dp = SecureAdaptiveClipping(
            strategy,
            noise_multiplier=privacy.client_noise_multiplier,
            num_sampled_clients=sampled,
            initial_clipping_norm=privacy.client_clipping_norm,
        )
    else:
        return strategy
    divide_by_sampled(strategy, sampled, current=lambda: dp.current_arrays)
    return dp


def divide_by_sampled(strategy: Strategy, sampled: int, *, current) -> None:
    """Make ``strategy``'s mean of the (clipped) updates their sum over the ``sampled`` shops.

    Flower's DP wrappers clip each reply, let the inner strategy average the ``r`` replies, then
    add noise of standard deviation ``σC/m`` (``m`` = shops sampled). The accounting
    (:mod:`fedgraph.privacy.client_level`) holds for a sensitivity of ``C/m``: one shop added or
    removed moves the aggregate by at most ``C/m``. That is true of ``Σ clipped updates / m``
    (a shop that did not reply counts as a zero update) but not of the mean over ``r < m``
    replies (up to ``2C/r``). This replaces the inner strategy's aggregation with the former;
    when all ``m`` reply the two are equal. ``current`` returns the global model the round started from.
    """
    from flwr.app import Array, ArrayRecord

    average = strategy.aggregate_train

    def aggregate_train(server_round, replies):
        replies = list(replies)
        arrays, metrics = average(server_round, replies)
        if arrays is None or len(replies) >= sampled:
            return arrays, metrics
        scale = len(replies) / sampled
        base = dict(zip(arrays.keys(), current().to_numpy_ndarrays()))
        return ArrayRecord(
            {k: Array((base[k] + scale * (v - base[k])).astype(v.dtype)) for k, v in zip(arrays.keys(), arrays.to_numpy_ndarrays())}
        ), metrics

    strategy.aggregate_train = aggregate_train  # type: ignore[method-assign]

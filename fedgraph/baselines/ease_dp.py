"""``ease_dp`` (only under ``privacy.enabled``): EASE from a user-level DP release of each shop's
Gram matrix at the shop's own (ε, δ): one Gaussian release, rows clipped to the user's latest m
items (m and λ chosen on validation)."""

from __future__ import annotations

from fedgraph.baselines import Baseline, BaselineContext, register


def run(c: BaselineContext) -> dict[str, dict]:
    from fedgraph.baselines.methods import ease_dp_alone
    from fedgraph.privacy import default_delta

    p = c.run.config.privacy

    def epsilon(shop) -> tuple[float, float]:
        """The shop's DP plan: the target ε and the plan's δ rule."""
        return float(p.target_epsilon), float(p.delta or default_delta(len(shop.trainable_users())))

    return ease_dp_alone(c.shops, c.finals, k=c.run.config.evaluation.k, epsilon=epsilon, seed=c.run.config.train.seed)


register(
    Baseline(
        "ease_dp",
        label="EASE-DP, shop alone",
        colour="#ff9896",
        order=50,
        run=run,
        dp_only=True,
        explain="under privacy.enabled: EASE on a user-level DP Gram matrix of each shop, same ε",
    )
)

"""``popularity``: each shop recommends its most popular unseen items (distinct buyers)."""

from __future__ import annotations

from fedgraph.baselines import Baseline, BaselineContext, register


def run(c: BaselineContext) -> dict[str, dict]:
    from fedgraph.baselines.methods import popularity

    return popularity(c.finals, k=c.run.config.evaluation.k)


register(
    Baseline(
        "popularity", label="popularity", colour="#999999", order=10, run=run, explain="each shop's most popular unseen items (no training)"
    )
)

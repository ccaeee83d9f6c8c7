"""``content``: no training; each user gets the unseen items whose text embedding is closest to
the mean of those of the user's recent items. Uses nobody else's data."""

from __future__ import annotations

from fedgraph.baselines import Baseline, BaselineContext, register


def run(c: BaselineContext) -> dict[str, dict]:
    from fedgraph.baselines.methods import content

    ev = c.run.config.evaluation
    return content(c.finals, k=ev.k, history=ev.history)


register(
    Baseline(
        "content",
        label="content (no training)",
        colour="#8c564b",
        order=20,
        run=run,
        explain="items closest in text embedding to the user's recent ones (no training)",
    )
)

"""``ease``: EASE (Steck, 2019) fitted on each shop's own log alone; λ chosen per shop on
validation from :data:`fedgraph.baselines.methods.EASE_L2`, then refitted on the whole training
period."""

from __future__ import annotations

from fedgraph.baselines import Baseline, BaselineContext, register


def run(c: BaselineContext) -> dict[str, dict]:
    from fedgraph.baselines.methods import ease_alone

    return ease_alone(c.shops, c.finals, k=c.run.config.evaluation.k)


register(
    Baseline(
        "ease",
        label="EASE, shop alone",
        colour="#d62728",
        order=40,
        run=run,
        explain="EASE (Steck 2019) on each shop's own log (λ chosen on validation)",
    )
)

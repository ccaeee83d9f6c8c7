"""``itemknn``: item-based cosine kNN on each shop's own log alone; neighbours chosen per shop on
validation from :data:`fedgraph.baselines.methods.KNN_NEIGHBOURS`."""

from __future__ import annotations

from fedgraph.baselines import Baseline, BaselineContext, register


def run(c: BaselineContext) -> dict[str, dict]:
    from fedgraph.baselines.methods import itemknn_alone

    return itemknn_alone(c.shops, c.finals, k=c.run.config.evaluation.k)


register(
    Baseline(
        "itemknn",
        label="item-kNN, shop alone",
        colour="#bcbd22",
        order=30,
        run=run,
        explain="item-based cosine kNN on each shop's own log (neighbours chosen on validation)",
    )
)

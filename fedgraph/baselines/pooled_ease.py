"""``pooled_ease``: one EASE on all shops' users over the union of their items (two shops' items
share a column when both id and title agree), λ chosen on validation."""

from __future__ import annotations

from fedgraph.baselines import Baseline, BaselineContext, register


def run(c: BaselineContext) -> dict[str, dict]:
    from fedgraph.baselines.methods import pooled_ease

    return pooled_ease(c.shops, c.finals, k=c.run.config.evaluation.k)


register(
    Baseline(
        "pooled_ease",
        label="EASE, all data pooled",
        colour="#98df8a",
        order=90,
        run=run,
        explain="one EASE on all shops' data pooled (the classical upper bound)",
    )
)

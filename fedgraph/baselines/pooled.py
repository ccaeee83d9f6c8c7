"""``pooled``: the same model trained centrally on all shops' data (the non-private upper bound:
the data flow federation exists to avoid), early-stopped per epoch on validation."""

from __future__ import annotations

from fedgraph.baselines import Baseline, BaselineContext, register


def run(c: BaselineContext) -> dict[str, dict]:
    from fedgraph.baselines.methods import baseline_settings, pooled_central

    cfg = c.run.config
    return pooled_central(
        c.shops,
        c.finals,
        c.run.new_model,
        baseline_settings(c.run),
        k=cfg.evaluation.k,
        history=cfg.evaluation.history,
        device=c.device,
        max_epochs=cfg.train.rounds * cfg.train.local_epochs,
        progress=c.say,
    )


register(
    Baseline(
        "pooled",
        label="same model, pooled",
        colour="#2ca02c",
        order=80,
        run=run,
        explain="the same model trained on all shops' data at once (upper bound, early-stopped on validation)",
    )
)

"""``lightgcn_pooled``: PyTorch Geometric's :class:`~torch_geometric.nn.models.LightGCN` (He et al.,
2020) trained centrally on the pooled interaction graph with BPR, a well-known reference with
fixed settings (``evaluation.lightgcn_*``). Items are shop-local nodes."""

from __future__ import annotations

from fedgraph.baselines import Baseline, BaselineContext, register


def run(c: BaselineContext) -> dict[str, dict]:
    from fedgraph.baselines.methods import lightgcn_pooled

    ev = c.run.config.evaluation
    return lightgcn_pooled(
        c.finals,
        k=ev.k,
        epochs=ev.lightgcn_epochs,
        layers=ev.lightgcn_layers,
        dim=ev.lightgcn_dim,
        lr=ev.lightgcn_lr,
        batch_size=ev.lightgcn_batch_size,
        seed=c.run.config.train.seed,
        device=c.device,
        progress=c.say,
    )


register(
    Baseline(
        "lightgcn_pooled",
        label="LightGCN pooled (PyG)",
        colour="#9467bd",
        order=100,
        run=run,
        explain="PyG's LightGCN on the pooled interaction graph (fixed settings, evaluation.lightgcn_*)",
    )
)

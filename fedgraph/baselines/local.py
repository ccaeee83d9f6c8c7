"""``local``: each shop trains the same model alone, in chunks of ``train.local_epochs`` epochs
(one chunk = one round), at most ``train.rounds`` chunks, keeping the chunk best on validation
(early stopping). Under ``privacy.enabled`` with the same DP plan as its federated shop (its ε
is recorded beside its figures). Shops are spread over CPU worker processes, one per core; on a
GPU they run one after the other in this process."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedgraph.baselines import Baseline, BaselineContext, register

if TYPE_CHECKING:
    import torch

    from fedgraph.federation.run_dir import RunDir
    from fedgraph.shop import ShopData


def train_alone(run_path: str, shop_name: str) -> tuple[str, dict]:
    """One shop trained alone (runs in a worker process, one thread)."""
    import torch

    from fedgraph.baselines.methods import baseline_settings, local_alone
    from fedgraph.federation.run_dir import RunDir
    from fedgraph.shop import ShopData
    from fedgraph.training import resolve_device

    torch.set_num_threads(1)
    run = RunDir.at(run_path)
    shop, final = ShopData.load(run.shop_file(shop_name)), ShopData.load(run.final_shop_file(shop_name))
    cfg = run.config
    device = resolve_device(cfg.train.device)
    from fedgraph.privacy.budget import plan_settings

    plan = _alone_plan(run, shop)  # planned once: it searches for the noise multiplier
    p = cfg.privacy
    dp = (
        None
        if plan is None
        else plan_settings(plan, noise_seed=cfg.train.seed if p.deterministic_noise else None, grad_sample_mode=p.grad_sample_mode)
    )
    per_shop = local_alone(
        [shop],
        [final],
        run.new_model,
        baseline_settings(run),
        k=cfg.evaluation.k,
        history=cfg.evaluation.history,
        device=device,
        chunk_epochs=cfg.train.local_epochs,
        max_chunks=cfg.train.rounds,
        dp=dp,
    )[shop_name]
    if plan is not None:
        per_shop = {**per_shop, "epsilon": float(plan["planned_epsilon"]), "delta": float(plan["delta"])}
    return shop_name, per_shop


def _alone_plan(run: RunDir, shop: ShopData) -> dict | None:
    """Under ``privacy.enabled`` the shop's DP plan, the same as its federated shop's (None without DP)."""
    from fedgraph.privacy.budget import plan_for

    cfg = run.config
    if not cfg.privacy.enabled:
        return None
    return plan_for(
        len(shop.trainable_users()),
        cfg.privacy,
        rounds=cfg.train.rounds,
        local_epochs=cfg.train.local_epochs,
        batch_size=cfg.train.batch_size,
    )


def _in_parallel(run: RunDir, device: torch.device) -> dict[str, dict]:
    """The each-shop-alone baseline, shops spread over CPU worker processes (one per core).

    On a GPU the shops run one after the other in this process instead.
    """
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    names = run.shop_names
    workers = min(len(names), os.cpu_count() or 1)
    if device.type != "cpu" or workers <= 1:
        return dict(train_alone(str(run.path), name) for name in names)
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return dict(pool.map(train_alone, [str(run.path)] * len(names), names))


def run(c: BaselineContext) -> dict[str, dict]:
    return _in_parallel(c.run, c.device)


register(
    Baseline(
        "local",
        label="same model, shop alone",
        colour="#e08a2c",
        order=60,
        run=run,
        explain="the same model on each shop's own log alone (early-stopped; under privacy the same DP plan)",
    )
)

"""What one shop does when the server asks it to train or evaluate.

The shop loads the global weights into a fresh model, trains on its own prepared data with
the run's settings and returns the new weights and a few figures. The model holds no
user or item ids (see :class:`fedgraph.models.InterestModel`), so everything it sends is
transferable between shops; the shop's data never leaves it.
"""

from __future__ import annotations

import os
import zlib
from typing import Any, Protocol

import torch

from fedgraph.atomic import atomic_path
from fedgraph.evaluation import evaluate_model
from fedgraph.federation.run_dir import RunDir, state_digest
from fedgraph.models.interest_model import is_private_key
from fedgraph.privacy.accounting import epsilons_of
from fedgraph.privacy.budget import ShopBudget, open_budget
from fedgraph.privacy.client_level import UNIFORM_WEIGHT_KEY
from fedgraph.runtime.ray_cluster import record_node
from fedgraph.shop import ShopData
from fedgraph.training import TrainSettings, resolve_device, train_local


class ShopCache:
    """Prepared shop data kept in memory by one process, at most a byte budget of it.

    A simulation round asks every shop once, one after another, so a least-recently-used cache
    smaller than the worker's shops would evict each shop just before its next turn and never
    hit. This one keeps the first shops that fit (:meth:`put` refuses the rest); the others are
    read from disk at each ask. A deployed shop (one shop) is always kept unless it alone is
    over the budget.
    """

    def __init__(self) -> None:
        self._shops: dict[str, ShopData] = {}
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._shops)

    def get(self, key: str) -> ShopData | None:
        return self._shops.get(key)

    def put(self, key: str, data: ShopData, budget_bytes: float) -> None:
        size = int(data.nbytes)
        if key not in self._shops and self.nbytes + size <= budget_bytes:
            self._shops[key] = data
            self.nbytes += size

    def pop(self, key: str) -> None:
        data = self._shops.pop(key, None)
        if data is not None:
            self.nbytes -= int(data.nbytes)


_SHOPS = ShopCache()


def shop_data(run: RunDir, partition_id: int) -> ShopData:
    """The prepared data of the shop at ``partition_id`` (kept in memory per process, up to
    ``federation.shop_cache_mb``: :class:`ShopCache`)."""
    names = run.round_shops
    if not 0 <= partition_id < len(names):
        raise IndexError(f"partition-id {partition_id} is out of range: the run has {len(names)} shops")
    path = run.shop_file(names[partition_id])
    key = str(path)
    data = _SHOPS.get(key)
    if data is None:
        data = ShopData.load(path)
        _SHOPS.put(key, data, run.config.federation.shop_cache_mb * 2**20)
    return data


def forget_cached(path) -> None:
    """Drop the cached copy of the shop data at ``path`` (after it was rebuilt on disk)."""
    _SHOPS.pop(str(path))


def train_settings(run: RunDir, *, epochs: int | None = None, seed: int = 0, proximal_mu: float = 0.0) -> TrainSettings:
    """The run's ``[train]`` settings as :class:`TrainSettings` (fields of the same name copied)."""
    t = run.config.train
    return TrainSettings.from_config(t, epochs=epochs or t.local_epochs, seed=seed, proximal_mu=proximal_mu)


def round_seed(base: int, server_round: int, shop: str) -> int:
    """A seed that differs per round and shop and is stable across processes."""
    return (base * 1_000_003 + server_round * 7919 + zlib.crc32(shop.encode())) % (2**31)


class ShopItems(Protocol):
    """What :func:`model_for_shop` needs of a shop: its name and catalog size (a
    :class:`~fedgraph.shop.ShopData`, or a deployed shop's catalog)."""

    shop: str

    @property
    def num_items(self) -> int: ...


def model_for_shop(run: RunDir, data: ShopItems, state: dict[str, torch.Tensor], *, server_round: int | None = None):
    """A model holding the global ``state`` plus this shop's private part (if any yet): the
    latest one, or with ``server_round`` the one kept after that round.

    Raises:
        ValueError: ``state`` does not fit the run's model (missing shared or unexpected keys).
    """
    model = run.new_model(data.num_items)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not is_private_key(k) for k in missing):
        raise ValueError(f"global weights do not fit the model: missing {missing}, unexpected {unexpected}")
    path = run.local_state_file(data.shop, server_round)
    if model.local is not None and path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=False)
    return model


def _limit_threads(run: RunDir) -> None:
    cpus = run.config.federation.cpus_per_shop
    if cpus >= 1 and "FEDGRAPH_KEEP_THREADS" not in os.environ:
        torch.set_num_threads(int(cpus))


def shop_budget(run: RunDir, data: ShopData) -> ShopBudget:
    """The shop's privacy budget and ledger (``privacy.enabled`` runs only)."""
    cfg = run.config
    return open_budget(
        run.privacy_dir(data.shop),
        shop=data.shop,
        users=len(data.trainable_users()),
        config=cfg.privacy,
        rounds=cfg.train.rounds,
        local_epochs=cfg.train.local_epochs,
        batch_size=cfg.train.batch_size,
    )


def _privacy_metrics(budget: ShopBudget, entry: dict[str, Any], report_epsilon: bool = True) -> dict[str, float]:
    """What a DP shop tells the server about its budget: its ledger's length and the target; with
    ``report_epsilon`` also ε so far (``epsilon``, the reported one, and ``epsilon-<name>`` under
    every accountant, -1 where one does not apply) and δ. Never the sample rate or σ. ε and δ
    are functions of the shop's size (σ, q, δ are planned from it): see ``privacy.report_epsilon``."""
    if not report_epsilon:
        return {"target-epsilon": budget.target_epsilon, "ledger-seq": int(entry["seq"])}
    return {
        "epsilon": float(entry["epsilon"]),
        **{f"epsilon-{name}": (-1.0 if value is None else value) for name, value in epsilons_of(entry).items()},
        "delta": budget.delta,
        "target-epsilon": budget.target_epsilon,
        "ledger-seq": int(entry["seq"]),
    }


class ShopRefusal(RuntimeError):
    """The shop declines a message under its own settings. The message is meant for the server
    (it holds no customer data); any other error's text stays in the shop (see
    :func:`fedgraph.deploy.shop_app.local_errors`)."""


class PrivacyBudgetExhausted(ShopRefusal):
    """The shop refuses to train: one more round would exceed its privacy budget."""


def shared_names(run_dir: str) -> list[str]:
    """Names of the shared (averaged) tensors, in the order the server sends them."""
    return list(RunDir.at(run_dir).new_model().state_dict().keys())


def _private_start(run: RunDir, shop: str, server_round: int) -> int | None:
    """Which private part round ``server_round`` starts from, so a resumed simulation replays a
    round exactly as the uninterrupted run trained it: the copy kept after the latest earlier
    round this shop trained in (a shop that sat a round out, e.g. out of budget, did not change
    it), or 0 (no copy: the freshly initialised, seeded part) before its first round. ``None``
    (the latest file) for a deployed shop, which keeps no per-round copies.

    A finished simulation keeps only the copies of the kept, the last and the second-to-last
    rounds (:func:`fedgraph.selection._prune_private_rounds`), so its last round can be replayed.
    """
    if not run.final_shop_file(shop).exists():  # a deployed shop
        return None
    folder = run.local_state_file(shop, 0).parent
    earlier = [int(f.stem.split("-")[1]) for f in folder.glob("round-*.pt")] if folder.is_dir() else []
    return max((r for r in earlier if r < server_round), default=0)


def shop_train(
    run_dir: str,
    partition_id: int,
    state: dict[str, torch.Tensor],
    *,
    server_round: int,
    proximal_mu: float = 0.0,
    refuse_when_exhausted: bool = False,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train the global ``state`` on one shop; return the new state and numeric metrics.

    Under ``privacy.enabled`` the shop trains with user-level DP-SGD, records the round in its
    ledger and reports its ε; a shop whose next round would exceed its budget does not train
    and replies with ``budget-exhausted = 1`` and the weights it was sent.
    """
    run = RunDir.at(run_dir)
    _limit_threads(run)
    data = shop_data(run, partition_id)
    record_node(run.path, data.shop, server_round)  # simulations on Ray only: which node trained the shop
    previous = _private_start(run, data.shop, server_round)
    model = model_for_shop(run, data, state, server_round=previous)
    seed = round_seed(run.config.train.seed, server_round, data.shop)
    settings = train_settings(run, seed=seed, proximal_mu=proximal_mu)
    device = resolve_device(run.config.train.device)
    # With uniform weights the reply holds no count, timing or loss: nothing about the shop's size or data.
    counts = run.config.federation.weights(run.config.privacy) == "users"
    if not run.config.privacy.enabled:
        result = train_local(model, data, settings, device=device)
        metrics = {**(result.as_metrics if counts else {}), UNIFORM_WEIGHT_KEY: 1.0, "partition-id": partition_id}
    else:
        budget = shop_budget(run, data)
        version = state_digest(state)[:16]
        report = run.config.privacy.report_epsilon
        if not budget.next_round_fits():
            entry = budget.record_skip(server_round, version)
            if refuse_when_exhausted:  # under SecAgg+ a refusing shop drops out of the round
                spent = f"ε {entry['epsilon']:.2f} of {budget.target_epsilon:g}" if report else f"target ε {budget.target_epsilon:g}"
                raise PrivacyBudgetExhausted(f"shop {data.shop}: one more round would exceed its privacy budget ({spent})")
            metrics = {**_privacy_metrics(budget, entry, report), "budget-exhausted": 1, "partition-id": partition_id}
            return {k: v.detach().cpu() for k, v in state.items()}, metrics
        privacy = run.config.privacy
        dp = budget.settings(seed if privacy.deterministic_noise else None, privacy.grad_sample_mode)
        result = train_local(model, data, settings, device=device, dp=dp)
        entry = budget.record_round(server_round, version, result.dp_history)
        # Under DP the weights are uniform (config.FederationConfig.weights): the loss, user count,
        # steps and seconds are computed on private data without noise and stay in the shop.
        metrics = {**_privacy_metrics(budget, entry, report), UNIFORM_WEIGHT_KEY: 1.0, "partition-id": partition_id}
    local = model.local_state_dict()
    if local:  # the shop-private part stays in the shop's own directory
        latest = run.local_state_file(data.shop)
        with atomic_path(latest) as tmp:
            torch.save({k: v.detach().cpu() for k, v in local.items()}, tmp)
        if run.final_shop_file(data.shop).exists():  # a simulation: a round may be chosen later on validation
            import shutil

            with atomic_path(run.local_state_file(data.shop, server_round)) as tmp:
                shutil.copyfile(latest, tmp)
    return {k: v.detach().cpu() for k, v in model.shared_state_dict().items()}, metrics


def shop_evaluate(run_dir: str, partition_id: int, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Recall@K / NDCG@K of the global ``state`` on one shop's held-out items.

    Raises:
        ShopRefusal: the shop's own config has ``privacy.share_evaluation = false``.
    """
    run = RunDir.at(run_dir)
    if not run.config.privacy.share_evaluation:
        raise ShopRefusal("this shop does not send evaluation figures (privacy.share_evaluation = false in its configuration)")
    _limit_threads(run)
    data = shop_data(run, partition_id)
    model = model_for_shop(run, data, state)
    ev = run.config.evaluation
    result = evaluate_model(model, data, k=ev.k, history=ev.history, device=resolve_device(run.config.train.device))
    return {**result, "num-examples": int(result["users"]), "partition-id": partition_id}


class CountsRefused(ShopRefusal):
    """The shop does not send item co-occurrence counts under its own privacy settings."""


def shop_item_counts(run_dir: str, partition_id: int) -> dict[str, Any]:
    """The shop's item keys and the upper triangle of its Gram matrix, per view
    (:mod:`fedgraph.federation.item_counts`): ``{"keys": {view: [...]}, "counts": {view: (row, col, count)}}``.

    Raises:
        CountsRefused: the shop's own config enables DP or secure aggregation (the counts are
            not DP and would be seen one shop at a time), or does not use federated EASE.
    """
    from fedgraph.federation.item_counts import item_keys, upper_counts

    run = RunDir.at(run_dir)
    cfg = run.config
    if cfg.model.private_part(cfg.privacy) != "federated_ease":
        raise CountsRefused(
            "this shop does not send item co-occurrence counts: they are not differentially private and need "
            "model.shop_private=federated_ease with privacy.enabled=false and privacy.secure_aggregation=false"
        )
    data = shop_data(run, partition_id)
    views = {"train": data}
    if run.final_shop_file(data.shop).exists():  # a simulation: the test view's counts too
        views["final"] = ShopData.load(run.final_shop_file(data.shop))
    return {"keys": {v: item_keys(d).tolist() for v, d in views.items()}, "counts": {v: upper_counts(d) for v, d in views.items()}}

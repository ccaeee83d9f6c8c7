"""The shared implementations of the baselines registered in :mod:`fedgraph.baselines` (one
file per baseline there says what each is and calls one of these), and the helpers they share:
validation-tuned fitting (:func:`tuned_shop_model`), early stopping (:func:`early_stopped`),
pooling shops (:func:`pool_shops`) and the settings every trained baseline uses
(:func:`baseline_settings`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch
from torch_geometric.nn.models import LightGCN

from fedgraph.evaluation import evaluate_content, evaluate_model, evaluate_popularity, evaluate_scores
from fedgraph.metrics import evaluate_ranking, top_k_items
from fedgraph.models.ease import EASE, dp_ease_noise, dp_gram, interaction_matrix
from fedgraph.models.interest_model import LOCAL_PREFIX, InterestModel
from fedgraph.models.itemknn import ItemKNN
from fedgraph.shop import ShopData
from fedgraph.training import TrainSettings, train_local

if TYPE_CHECKING:
    from fedgraph.federation.run_dir import RunDir
    from fedgraph.privacy import DPSettings

ModelFactory = Callable[[int], InterestModel]  # number of shop-local items -> fresh model

#: EASE ridge weights tried on validation.
EASE_L2: tuple[float, ...] = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)
#: Item-kNN neighbour counts tried on validation.
KNN_NEIGHBOURS: tuple[int, ...] = (10, 25, 50, 100, 200, 400)
#: ``ease_dp``: items kept per user (latest first) tried on validation; fewer items, less noise.
DP_ROW_ITEMS: tuple[int, ...] = (8, 16, 32)
#: ``ease_dp``: ridge weights tried on validation (the noise calls for larger ones).
DP_EASE_L2: tuple[float, ...] = (1000.0, 3000.0, 10000.0)


def baseline_settings(run: RunDir) -> TrainSettings:
    """The trained baselines' settings: the run's ``[train]`` settings, with as many epochs as
    the whole federated run trains (``train.rounds * train.local_epochs``)."""
    from fedgraph.federation.shop_side import train_settings

    cfg = run.config
    return train_settings(run, epochs=cfg.train.rounds * cfg.train.local_epochs, seed=cfg.train.seed)


def shop_matrix(data: ShopData, *, latest: int = 0) -> sp.csr_matrix:
    """The shop's binary ``[users, items]`` training matrix (optionally each row clipped to its ``latest`` items)."""
    return interaction_matrix(data.indptr, data.item, data.num_items, latest=latest)


def _ndcg(result: dict, k: int) -> float:
    value = float(result[f"ndcg@{k}"])
    return value if value == value else -1.0


def macro_ndcg(results: Iterable[dict], k: int) -> float:
    """The mean NDCG@k over the results that have a figure (a shop with no evaluable user has
    none); -1.0 when none has, so any real figure ranks above it."""
    values = [float(r[f"ndcg@{k}"]) for r in results]
    values = [v for v in values if v == v]
    return float(np.mean(values)) if values else -1.0


def _score_fitted(model: Any, data: ShopData, k: int) -> dict:
    users = data.evaluable_users()
    return evaluate_scores(data, users, model.scores(shop_matrix(data)[users]), k=k)


def tuned_shop_model(make: Callable[[Any], Any], grid: tuple, val: ShopData, final: ShopData, *, k: int) -> dict:
    """Fit ``make(setting)`` on the validation view for every setting of ``grid``, keep the best
    validation NDCG@k (ties: the first), refit it on the whole training period and score it on test."""
    tried = {}
    for setting in grid:
        tried[setting] = _ndcg(_score_fitted(make(setting).fit(shop_matrix(val)), val, k), k)
    best = max(grid, key=lambda g: tried[g])  # max keeps the first of equal values
    result = _score_fitted(make(best).fit(shop_matrix(final)), final, k)
    return {**result, "setting": best, "validation_ndcg": tried[best], "tried": {str(g): v for g, v in tried.items()}}


def ease_alone(shops: list[ShopData], finals: list[ShopData], *, k: int) -> dict[str, dict]:
    """``ease``: each shop's own EASE, λ chosen on its validation split."""
    return {s.shop: tuned_shop_model(lambda l2: EASE(l2), EASE_L2, s, f, k=k) for s, f in zip(shops, finals)}


def itemknn_alone(shops: list[ShopData], finals: list[ShopData], *, k: int) -> dict[str, dict]:
    """``itemknn``: each shop's own item-kNN, neighbours chosen on its validation split."""
    return {s.shop: tuned_shop_model(lambda n: ItemKNN(n), KNN_NEIGHBOURS, s, f, k=k) for s, f in zip(shops, finals)}


def dp_ease_model(data: ShopData, *, row_items: int, l2: float, noise_multiplier: float, rng: np.random.Generator) -> EASE:
    """EASE from one user-level DP release of ``data``'s Gram matrix (:func:`~fedgraph.models.ease.dp_gram`)."""
    g = dp_gram(shop_matrix(data, latest=row_items), max_items_per_user=row_items, noise_multiplier=noise_multiplier, rng=rng)
    return EASE(l2).fit_gram(g, popularity=np.diag(g).copy())


def ease_dp_alone(
    shops: list[ShopData], finals: list[ShopData], *, k: int, epsilon: Callable[[ShopData], tuple[float, float]], seed: int
) -> dict[str, dict]:
    """``ease_dp``: each shop alone, EASE on a DP Gram matrix at ``epsilon(shop) -> (ε, δ)``.

    The test figure comes from one fresh release on the whole training period (that release is
    what ε covers); the choice of (m, λ) on validation is a simulation-only tuning step whose own
    releases are not accounted (a deployment would fix m and λ in advance).
    """
    out = {}
    for s, f in zip(shops, finals):
        eps, delta = epsilon(f)
        sigma = dp_ease_noise(eps, delta)
        rng = np.random.default_rng([seed, len(out)])
        tried = {}
        for m in DP_ROW_ITEMS:
            for l2 in DP_EASE_L2:
                model = dp_ease_model(s, row_items=m, l2=l2, noise_multiplier=sigma, rng=rng)
                tried[(m, l2)] = _ndcg(_score_fitted(model, s, k), k)
        m, l2 = max(tried, key=lambda key: tried[key])
        result = _score_fitted(dp_ease_model(f, row_items=m, l2=l2, noise_multiplier=sigma, rng=rng), f, k)
        out[s.shop] = {
            **result,
            "setting": [m, l2],
            "validation_ndcg": tried[(m, l2)],
            "epsilon": eps,
            "delta": delta,
            "noise_multiplier": sigma,
            "mechanism": "Gaussian mechanism on the Gram matrix, one release, rows clipped to m items",
        }
    return out


def pooled_ease(shops: list[ShopData], finals: list[ShopData], *, k: int) -> dict[str, dict]:
    """``pooled_ease``: one EASE over every shop's users and the union of the shops' items
    (the same item in two shops: same id and same title). It is EASE on the sum of the shops'
    Gram matrices, so it is computed as :class:`~fedgraph.federation.item_counts.FederatedEASE`
    (tested equal to EASE on the stacked rows)."""
    from fedgraph.federation.item_counts import CountSum, FederatedEASE, item_keys, upper_counts

    def summed(views: list[ShopData]) -> tuple[np.ndarray, sp.csr_matrix]:
        total = CountSum()
        for v in views:
            total.add(item_keys(v), *upper_counts(v))
        return total.total()

    def per_shop(model: FederatedEASE, views: list[ShopData]) -> dict[str, dict]:
        out = {}
        for v in views:
            users = v.evaluable_users()
            out[v.shop] = evaluate_scores(v, users, model.scores(v, shop_matrix(v)[users]), k=k)
        return out

    val_counts = summed(shops)
    tried = {}
    for l2 in EASE_L2:
        res = per_shop(FederatedEASE(*val_counts, l2), shops)
        tried[l2] = macro_ndcg(res.values(), k)
    best = max(EASE_L2, key=lambda g: tried[g])
    final_counts = summed(finals)
    result = per_shop(FederatedEASE(*final_counts, best), finals)
    return {
        shop: {**r, "setting": best, "validation_ndcg": tried[best], "shared_items": int(len(final_counts[0]))}
        for shop, r in result.items()
    }


def early_stopped(
    model: InterestModel,
    data: ShopData,
    settings: TrainSettings,
    *,
    chunk_epochs: int,
    max_chunks: int,
    validate: Callable[[InterestModel], float],
    patience: int = 4,
    device: torch.device,
    dp: DPSettings | None = None,
    negative_range: np.ndarray | None = None,
) -> dict[str, Any]:
    """Train ``model`` in chunks of ``chunk_epochs`` epochs (fresh optimiser and seed per chunk, as in a
    federated round), score ``validate(model)`` before the first and after every chunk, stop after
    ``patience`` chunks without a better score, and leave the best state in ``model``.

    Returns ``{"chunks": best chunk count, "validation_ndcg": its score, "curve": [...]}``.
    """
    from dataclasses import replace

    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    curve = [float(validate(model))]
    best, since = 0, 0
    for chunk in range(1, max_chunks + 1):
        chunk_settings = replace(settings, epochs=chunk_epochs, seed=settings.seed * 1_000_003 + chunk)
        train_local(model, data, chunk_settings, device=device, dp=dp, negative_range=negative_range)
        curve.append(float(validate(model)))
        if curve[-1] > curve[best]:
            best, since = chunk, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since += 1
            if since >= patience:
                break
    model.load_state_dict(best_state)
    return {"chunks": best, "validation_ndcg": curve[best], "curve": curve}


def popularity(shops: list[ShopData], *, k: int) -> dict[str, dict]:
    return {s.shop: evaluate_popularity(s, k=k) for s in shops}


def content(shops: list[ShopData], *, k: int, history: int) -> dict[str, dict]:
    return {s.shop: evaluate_content(s, k=k, history=history) for s in shops}


def local_alone(
    shops: list[ShopData],
    finals: list[ShopData],
    new_model: ModelFactory,
    settings: TrainSettings,
    *,
    k: int,
    history: int,
    device: torch.device,
    chunk_epochs: int,
    max_chunks: int,
    progress: Callable[[str], None] = lambda _: None,
    dp: DPSettings | None = None,
) -> dict[str, dict]:
    """Each shop trains its own model from the same initialisation, early-stopped on its own
    validation split (:func:`early_stopped`); scored on its own test split.

    With ``dp`` every shop trains with user-level DP-SGD under those settings.
    """
    out = {}
    for shop, final in zip(shops, finals):
        model = new_model(shop.num_items)
        started = time.perf_counter()
        chosen = early_stopped(
            model,
            shop,
            settings,
            chunk_epochs=chunk_epochs,
            max_chunks=max_chunks,
            device=device,
            dp=dp,
            validate=lambda m, shop=shop: _ndcg(evaluate_model(m, shop, k=k, history=history, device=device), k),
        )
        out[shop.shop] = {
            **evaluate_model(model, final, k=k, history=history, device=device),
            "epochs": chosen["chunks"] * chunk_epochs,
            "validation_ndcg": chosen["validation_ndcg"],
        }
        progress(
            f"local baseline: {shop.shop} trained alone in {time.perf_counter() - started:.1f} s ({out[shop.shop]['epochs']} epochs kept)"
        )
    return out


def pool_shops(shops: list[ShopData]) -> tuple[ShopData, np.ndarray]:
    """Concatenate shops into one :class:`ShopData` (item and user tables stacked).

    Returns the pooled data and the per-user ``[low, high)`` item range of the user's own
    shop, so negatives stay in-shop.
    """
    item_offsets = np.cumsum([0] + [s.num_items for s in shops])
    ranges, indptrs, tindptrs = [], [np.zeros(1, dtype=np.int64)], [np.zeros(1, dtype=np.int64)]
    for s, off in zip(shops, item_offsets):
        ranges.append(np.tile([off, off + s.num_items], (s.num_users, 1)))
        indptrs.append(s.indptr[1:] + indptrs[-1][-1])
        tindptrs.append(s.test_indptr[1:] + tindptrs[-1][-1])
    pooled = ShopData(
        shop="pooled",
        items=np.concatenate([np.char.add(f"{s.shop}/", s.items) for s in shops]),
        item_titles=np.concatenate([s.item_titles for s in shops]),
        item_categories=np.concatenate([s.item_categories for s in shops]),
        item_features=np.concatenate([s.item_features for s in shops]),
        users=np.concatenate([np.char.add(f"{s.shop}/", s.users) for s in shops]),
        indptr=np.concatenate(indptrs),
        item=np.concatenate([s.item + off for s, off in zip(shops, item_offsets)]),
        attr=np.concatenate([s.attr for s in shops]),
        test_indptr=np.concatenate(tindptrs),
        test_item=np.concatenate([s.test_item + off for s, off in zip(shops, item_offsets)]),
        # The customers' own search queries too, so the pooled model sees what the federated one does.
        query_indptr=np.concatenate([[0], np.cumsum(np.concatenate([np.diff(s.query_indptr) for s in shops]))]).astype(np.int64),
        query_text=np.concatenate([s.query_text for s in shops]),
        query_pos=np.concatenate([s.query_pos for s in shops]),
    )
    return pooled, np.concatenate(ranges).astype(np.int64)


def _shop_view(model: InterestModel, new_model: ModelFactory, shop: ShopData, offset: int) -> InterestModel:
    """The pooled model seen from one shop: shared weights plus that shop's slice of the pooled item table."""
    view = new_model(shop.num_items)
    state = model.state_dict()
    if view.local is not None:
        key = f"{LOCAL_PREFIX}weight"
        state[key] = state[key][offset : offset + shop.num_items]
    view.load_state_dict(state)
    return view


def pooled_central(
    shops: list[ShopData],
    finals: list[ShopData],
    new_model: ModelFactory,
    settings: TrainSettings,
    *,
    k: int,
    history: int,
    device: torch.device,
    max_epochs: int,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, dict]:
    """The same model trained on all shops' data at once, early-stopped per epoch on the shops'
    macro validation NDCG (pooled data are ~N times a shop's: fewer epochs suit it); scored per shop."""
    pooled, negative_range = pool_shops(shops)
    offsets = np.cumsum([0] + [s.num_items for s in shops])[:-1]
    model = new_model(pooled.num_items)

    def validate(m: InterestModel) -> float:
        return macro_ndcg(
            (evaluate_model(_shop_view(m, new_model, s, int(o)), s, k=k, history=history, device=device) for s, o in zip(shops, offsets)), k
        )

    chosen = early_stopped(
        model, pooled, settings, chunk_epochs=1, max_chunks=max_epochs, validate=validate, device=device, negative_range=negative_range
    )
    progress(f"pooled baseline: {chosen['chunks']} epochs kept (validation NDCG@{k} {chosen['validation_ndcg']:.4f})")
    return {
        f.shop: {
            **evaluate_model(_shop_view(model, new_model, f, int(o)), f, k=k, history=history, device=device),
            "epochs": chosen["chunks"],
        }
        for f, o in zip(finals, offsets)
    }


def lightgcn_pooled(
    shops: list[ShopData],
    *,
    k: int,
    epochs: int,
    layers: int,
    dim: int,
    lr: float,
    batch_size: int,
    seed: int,
    device: torch.device,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, dict]:
    """PyG LightGCN on the pooled user–item graph (users first, then items), BPR loss."""
    pooled, negative_range = pool_shops(shops)
    n_users, n_items = pooled.num_users, pooled.num_items
    user_of_edge = np.repeat(np.arange(n_users), np.diff(pooled.indptr))
    src = torch.from_numpy(user_of_edge)
    dst = torch.from_numpy(pooled.item + n_users)
    edge_index = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], dim=1).to(device)
    torch.manual_seed(seed)
    model = LightGCN(n_users + n_items, embedding_dim=dim, num_layers=layers).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    n_edges = len(user_of_edge)
    started = time.perf_counter()
    for epoch in range(epochs):
        order = rng.permutation(n_edges)
        for start in range(0, n_edges, batch_size):
            idx = order[start : start + batch_size]
            users = user_of_edge[idx]
            low, high = negative_range[users, 0], negative_range[users, 1]
            negatives = low + (rng.random(len(idx)) * (high - low)).astype(np.int64)
            u = torch.from_numpy(users).to(device)
            pos = torch.from_numpy(pooled.item[idx] + n_users).to(device)
            neg = torch.from_numpy(negatives + n_users).to(device)
            emb = model.get_embedding(edge_index)
            pos_rank = (emb[u] * emb[pos]).sum(-1)
            neg_rank = (emb[u] * emb[neg]).sum(-1)
            node_id = torch.cat([u, pos, neg]).unique()
            loss = model.recommendation_loss(pos_rank, neg_rank, node_id=node_id, lambda_reg=1e-4)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if (epoch + 1) % 2 == 0 or epoch + 1 == epochs:
            progress(f"lightgcn_pooled: epoch {epoch + 1}/{epochs}, loss {float(loss.detach()):.4f}, {time.perf_counter() - started:.0f} s")
    model.eval()
    with torch.no_grad():
        emb = model.get_embedding(edge_index).cpu()
    out, user_off, item_off = {}, 0, n_users
    for s in shops:
        users = s.evaluable_users()
        scores = emb[user_off + users] @ emb[item_off : item_off + s.num_items].T
        ranked = top_k_items(scores, k, [s.history(u) for u in users])
        out[s.shop] = evaluate_ranking(ranked, [s.test_items(u) for u in users], k)
        user_off += s.num_users
        item_off += s.num_items
    return out

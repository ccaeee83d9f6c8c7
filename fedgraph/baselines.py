"""The methods federated training is measured against.

* ``popularity`` – each shop recommends its most popular unseen items.
* ``content`` – no training: each user gets the unseen items whose text embedding is closest
  to the mean of those of the user's recent items. Uses nobody else's data.
* ``local`` – each shop trains the same model alone, for the same number of epochs the
  federated model saw (rounds × local epochs).
* ``pooled`` – the same model trained centrally on all shops' data (non-private upper
  bound: the data flow federation exists to avoid).
* ``lightgcn_pooled`` – PyTorch Geometric's :class:`~torch_geometric.nn.models.LightGCN`
  (He et al., 2020) trained centrally on the pooled interaction graph with BPR, a well-known
  reference. Items are shop-local nodes (ids mean nothing across shops).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from torch_geometric.nn.models import LightGCN

from fedgraph.evaluation import evaluate_content, evaluate_model, evaluate_popularity
from fedgraph.metrics import evaluate_ranking, top_k_items
from fedgraph.models.interest_model import InterestModel
from fedgraph.shop import ShopData
from fedgraph.training.local import TrainSettings, train_local

if TYPE_CHECKING:
    from fedgraph.privacy import DPSettings

ModelFactory = Callable[[int], InterestModel]  # number of shop-local items -> fresh model


def popularity(shops: list[ShopData], *, k: int) -> dict[str, dict]:
    return {s.shop: evaluate_popularity(s, k=k) for s in shops}


def content(shops: list[ShopData], *, k: int, history: int) -> dict[str, dict]:
    return {s.shop: evaluate_content(s, k=k, history=history) for s in shops}


def local_alone(
    shops: list[ShopData], new_model: ModelFactory, settings: TrainSettings, *, k: int, history: int, device: torch.device,
    progress: Callable[[str], None] = lambda _: None, dp: "DPSettings | None" = None,
) -> dict[str, dict]:
    """Each shop trains its own model from the same initialisation; scored on its own test set.

    With ``dp`` every shop trains with user-level DP-SGD under those settings.
    """
    out = {}
    for shop in shops:
        model = new_model(shop.num_items)
        started = time.perf_counter()
        train_local(model, shop, settings, device=device, dp=dp)
        out[shop.shop] = evaluate_model(model, shop, k=k, history=history, device=device)
        progress(f"local baseline: {shop.shop} trained alone in {time.perf_counter() - started:.1f} s")
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
    )
    return pooled, np.concatenate(ranges).astype(np.int64)


def pooled_central(
    shops: list[ShopData], new_model: ModelFactory, settings: TrainSettings, *, k: int, history: int, device: torch.device
) -> dict[str, dict]:
    """The same model trained on all shops' data at once; scored per shop."""
    pooled, negative_range = pool_shops(shops)
    model = new_model(pooled.num_items)
    train_local(model, pooled, settings, device=device, negative_range=negative_range)
    out, offset = {}, 0
    for s in shops:
        # The same model seen from one shop: shared weights plus that shop's slice of the
        # pooled item table.
        view = new_model(s.num_items)
        state = model.state_dict()
        if view.local is not None:
            state["local.weight"] = state["local.weight"][offset : offset + s.num_items]
        view.load_state_dict(state)
        out[s.shop] = evaluate_model(view, s, k=k, history=history, device=device)
        offset += s.num_items
    return out


def lightgcn_pooled(
    shops: list[ShopData], *, k: int, epochs: int, layers: int, dim: int, lr: float, batch_size: int, seed: int,
    device: torch.device, progress: Callable[[str], None] = lambda _: None,
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

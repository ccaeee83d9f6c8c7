"""Rebuild a shop's local interest graph from the global model's embeddings.

After federated training every shop embeds, with the global model, each of its users (from the
user's own history) and each of its items (from the public item text). All vectors live in one
space of dimension ``d`` where the dot product is the recommendation score. From those vectors
:func:`build_interest_graph` derives three edge sets:

* ``user -> item`` (*recommended*): each user's top-k items by dot product, skipping the items the
  user already interacted with;
* ``item -> item`` (*similar_to*): each item's top-k nearest other items by cosine similarity;
* ``user -> interest`` (*interested_in*): each user's top-k interests (item categories), weighted
  by a softmax affinity, see :func:`build_interest_graph`.

Scores are computed in chunks with :func:`torch.topk`, so the full ``users x items`` or
``items x items`` matrix never exists in memory: peak extra memory is about
``batch_size x max(n_items, n_interests) x 4`` bytes (plus the ``k`` results per row).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "ITEM_ITEM_DTYPE",
    "USER_INTEREST_DTYPE",
    "USER_ITEM_DTYPE",
    "InterestGraph",
    "build_interest_graph",
    "to_hetero_data",
]

#: One row per ``user -> interest`` edge; ``weight`` is the softmax probability of the interest.
USER_INTEREST_DTYPE = np.dtype([("user_idx", "<i4"), ("interest_idx", "<i4"), ("weight", "<f4")])
#: One row per ``user -> item`` recommendation; ``rank`` is 1-based within the user, by score.
USER_ITEM_DTYPE = np.dtype([("user_idx", "<i4"), ("item_idx", "<i4"), ("score", "<f4"), ("rank", "<i4")])
#: One row per ``item -> item`` neighbour edge; ``similarity`` is the cosine similarity.
ITEM_ITEM_DTYPE = np.dtype([("src_idx", "<i4"), ("dst_idx", "<i4"), ("similarity", "<f4")])


@dataclass
class InterestGraph:
    """A shop's interest graph; node lists plus three edge sets indexing into them.

    The edge sets are numpy structured arrays (``graph.user_item["score"]`` etc.) with the dtypes
    :data:`USER_INTEREST_DTYPE`, :data:`USER_ITEM_DTYPE` and :data:`ITEM_ITEM_DTYPE`; rows are
    grouped by source node and sorted by weight, highest first, within a source.
    """

    shop: str
    model_version: str
    round: int
    users: list[str]
    items: list[str]
    item_titles: list[str]
    item_categories: list[str]
    interests: list[str]
    user_interest: np.ndarray
    user_item: np.ndarray
    item_item: np.ndarray
    event_offset: str | None = None

    @property
    def num_users(self) -> int:
        return len(self.users)

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def num_interests(self) -> int:
        return len(self.interests)

    def validate(self) -> None:
        """Raise ``ValueError`` if the node lists and edge sets are inconsistent."""
        if not isinstance(self.shop, str) or not self.shop:
            raise ValueError(f"shop must be a non-empty string, got {self.shop!r}")
        n_items = len(self.items)
        if len(self.item_titles) != n_items or len(self.item_categories) != n_items:
            raise ValueError(f"{n_items} items but {len(self.item_titles)} titles and {len(self.item_categories)} categories")
        for name, ids in (("user", self.users), ("item", self.items), ("interest", self.interests)):
            if len(set(ids)) != len(ids):
                raise ValueError(f"duplicate {name} ids in graph for shop {self.shop!r}")
        missing = set(self.item_categories) - set(self.interests)
        if missing:
            raise ValueError(f"item categories missing from interests: {sorted(missing)[:5]}")
        checks = (
            ("user_interest", USER_INTEREST_DTYPE, "user_idx", self.num_users, "interest_idx", self.num_interests),
            ("user_item", USER_ITEM_DTYPE, "user_idx", self.num_users, "item_idx", n_items),
            ("item_item", ITEM_ITEM_DTYPE, "src_idx", n_items, "dst_idx", n_items),
        )
        for name, dtype, src, n_src, dst, n_dst in checks:
            edges = getattr(self, name)
            if not isinstance(edges, np.ndarray) or edges.dtype != dtype:
                raise ValueError(f"{name} must be a numpy array of dtype {dtype}")
            for field, bound in ((src, n_src), (dst, n_dst)):
                col = edges[field]
                if col.size and (col.min() < 0 or col.max() >= bound):
                    raise ValueError(f"{name}.{field} out of range [0, {bound})")
            weight = edges[dtype.names[2]]
            if weight.size and not np.isfinite(weight).all():
                raise ValueError(f"{name} has non-finite weights")


def _as_matrix(name: str, value: Any, n_rows: int) -> np.ndarray:
    import torch  # here, not at import: reading a graph store must not pay for importing torch

    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float32).numpy()
    arr = np.asarray(value, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != n_rows:
        raise ValueError(f"{name} must have shape ({n_rows}, d), got {arr.shape}")
    if arr.size and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return np.ascontiguousarray(arr)


def _exclusion_csr(exclude: Sequence[np.ndarray], n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    if len(exclude) != n_users:
        raise ValueError(f"exclude must have one entry per user ({n_users}), got {len(exclude)}")
    arrays = [np.asarray(e, dtype=np.int64).reshape(-1) for e in exclude]
    # The concatenated indices are kept as int32 (half the memory for big histories).
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum([a.size for a in arrays], out=indptr[1:])
    if indptr[-1] == 0:
        return indptr, np.zeros(0, dtype=np.int32)
    indices = np.concatenate(arrays)
    del arrays
    if indices.min() < 0 or indices.max() >= n_items:
        bad = indices[(indices < 0) | (indices >= n_items)][0]
        raise ValueError(f"exclude contains item index {bad}, outside [0, {n_items})")
    return indptr, indices.astype(np.int32)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.nn.functional.normalize(x, p=2.0, dim=-1, eps=1e-12)


def build_interest_graph(
    shop: str,
    user_ids: Sequence[str],
    user_embeddings: np.ndarray | torch.Tensor,
    item_ids: Sequence[str],
    item_embeddings: np.ndarray | torch.Tensor,
    item_titles: Sequence[str],
    item_categories: Sequence[str],
    *,
    exclude: Sequence[np.ndarray] | None = None,
    top_k_items: int = 20,
    top_k_interests: int = 5,
    top_k_neighbours: int = 10,
    model_version: str = "",
    round: int = 0,
    device: str | torch.device | None = None,
    batch_size: int = 4096,
    temperature: float = 0.1,
    item_bias: np.ndarray | torch.Tensor | None = None,
    rescore: Callable[[int, int, torch.Tensor], torch.Tensor] | None = None,
) -> InterestGraph:
    """Build a shop's :class:`InterestGraph` from user and item embeddings.

    Args:
        shop: shop name; ids below are local to it.
        user_ids, user_embeddings: ``n_users`` distinct ids and an ``(n_users, d)`` matrix.
        item_ids, item_embeddings: ``n_items`` distinct ids and an ``(n_items, d)`` matrix.
        item_titles, item_categories: one string per item; the distinct categories, sorted,
            become the interest nodes.
        exclude: optional, one array of item indices per user: items the user already
            interacted with, never recommended to them. A user with fewer than
            ``top_k_items`` non-excluded items gets fewer recommendations.
        top_k_items: recommendations per user, by dot product ``user . item`` (the score).
        top_k_interests: interests kept per user.
        top_k_neighbours: neighbours per item, by cosine similarity, never the item itself.
        model_version, round: identify the global model that produced the embeddings.
        device: torch device for the scoring (e.g. ``"cuda"``); CPU when ``None``.
        batch_size: users (or items) scored per chunk; peak extra memory is about
            ``batch_size * n_items * 4`` bytes.
        temperature: softmax temperature of the user->interest affinity.
        item_bias: optional ``(n_items,)`` per-item score offset: the recommendation score is
            then ``user . item + item_bias`` (the interest model's shop-private item bias).
            Similarities and interests use the embeddings alone.
        rescore: optional ``rescore(start, stop, scores) -> scores``: given users
            ``start:stop`` and their ``[stop - start, n_items]`` embedding scores, the scores to
            recommend by instead (the hybrid's blend with the shop-private EASE); the
            recommendation edges then carry these scores.

    User -> interest weights: each interest ``c`` gets an embedding ``e_c``, the L2-normalised
    mean of the embeddings of the items whose category is ``c``. A user ``u``'s affinity to
    ``c`` is ``softmax_c(cos(u, e_c) / temperature)`` over *all* interests; the
    ``top_k_interests`` most likely interests are kept and their probability (not renormalised
    over the kept ones) is the edge weight, so a user's weights sum to at most 1.

    Ties between equal scores are broken arbitrarily.
    """
    users = [str(u) for u in user_ids]
    items = [str(i) for i in item_ids]
    titles = ["" if t is None else str(t) for t in item_titles]
    categories = ["" if c is None else str(c) for c in item_categories]
    n_users, n_items = len(users), len(items)
    if len(titles) != n_items or len(categories) != n_items:
        raise ValueError(f"{n_items} item ids but {len(titles)} titles and {len(categories)} categories")
    for name, ids in (("user", users), ("item", items)):
        if len(set(ids)) != len(ids):
            raise ValueError(f"{name} ids must be unique")
    for name, k in (("top_k_items", top_k_items), ("top_k_interests", top_k_interests), ("top_k_neighbours", top_k_neighbours)):
        if int(k) < 0:
            raise ValueError(f"{name} must be >= 0, got {k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")

    U = _as_matrix("user_embeddings", user_embeddings, n_users)
    I = _as_matrix("item_embeddings", item_embeddings, n_items)
    if U.shape[1] != I.shape[1]:
        raise ValueError(f"user dim {U.shape[1]} != item dim {I.shape[1]}")
    indptr, excl = _exclusion_csr(exclude, n_users, n_items) if exclude is not None else (None, None)

    interests, item_interest = np.unique(np.asarray(categories, dtype=object), return_inverse=True)
    interests = [str(c) for c in interests]
    n_interests = len(interests)
    import torch

    dev = torch.device(device) if device is not None else torch.device("cpu")

    with torch.inference_mode():
        items_t = torch.from_numpy(I).to(dev)
        bias_t = None
        if item_bias is not None:
            bias_t = torch.as_tensor(np.asarray(item_bias, dtype=np.float32).reshape(-1)).to(dev)
            if bias_t.shape[0] != n_items:
                raise ValueError(f"item_bias has {bias_t.shape[0]} entries for {n_items} items")
        items_n = _normalise(items_t)
        # Interest embeddings: normalised mean of the raw item embeddings per category.
        if n_interests:
            inv = torch.from_numpy(item_interest.astype(np.int64)).to(dev)
            sums = torch.zeros(n_interests, I.shape[1], dtype=torch.float32, device=dev)
            sums.index_add_(0, inv, items_t)
            counts = torch.bincount(inv, minlength=n_interests).clamp_min(1).to(torch.float32)
            interest_n = _normalise(sums / counts[:, None])
        else:
            interest_n = torch.zeros(0, I.shape[1], device=dev)

        k_items = min(int(top_k_items), n_items)
        k_int = min(int(top_k_interests), n_interests)
        rec_idx = np.empty((n_users, k_items), dtype=np.int32)
        rec_score = np.empty((n_users, k_items), dtype=np.float32)
        int_idx = np.empty((n_users, k_int), dtype=np.int32)
        int_w = np.empty((n_users, k_int), dtype=np.float32)

        # One score buffer reused by every chunk instead of a fresh batch x items matrix per
        # chunk (twice, with the bias); the values are the same, computed in place (why:
        # simulations/RESULTS.md, 'Implementation measurements').
        buffer = torch.empty(min(batch_size, n_users), n_items if k_items else 0, dtype=torch.float32, device=dev)
        items_tt = items_t.T
        for start in range(0, n_users, batch_size):
            stop = min(start + batch_size, n_users)
            u = torch.from_numpy(U[start:stop]).to(dev)
            if k_items:
                scores = torch.matmul(u, items_tt, out=buffer[: stop - start])
                if bias_t is not None:
                    scores.add_(bias_t)
                if rescore is not None:
                    scores = rescore(start, stop, scores).to(dev, torch.float32)
                if excl is not None and indptr[stop] > indptr[start]:
                    cols = torch.from_numpy(excl[indptr[start] : indptr[stop]]).to(dev).long()
                    rows = torch.repeat_interleave(
                        torch.arange(stop - start, device=dev),
                        torch.from_numpy(np.diff(indptr[start : stop + 1])).to(dev),
                    )
                    scores[rows, cols] = float("-inf")
                top = torch.topk(scores, k_items, dim=1, largest=True, sorted=True)
                rec_idx[start:stop] = top.indices.to(torch.int32).cpu().numpy()
                rec_score[start:stop] = top.values.cpu().numpy()
                del scores, top
            if k_int:
                logits = (_normalise(u) @ interest_n.T) / float(temperature)
                probs = torch.softmax(logits, dim=1)
                top = torch.topk(probs, k_int, dim=1, largest=True, sorted=True)
                int_idx[start:stop] = top.indices.to(torch.int32).cpu().numpy()
                int_w[start:stop] = top.values.cpu().numpy()
                del logits, probs, top
        del buffer

        k_nb = min(int(top_k_neighbours), max(n_items - 1, 0))
        nb_idx = np.empty((n_items, k_nb), dtype=np.int32)
        nb_sim = np.empty((n_items, k_nb), dtype=np.float32)
        if k_nb:
            for start in range(0, n_items, batch_size):
                stop = min(start + batch_size, n_items)
                sims = items_n[start:stop] @ items_n.T
                local = torch.arange(stop - start, device=dev)
                sims[local, local + start] = float("-inf")  # no self loops
                top = torch.topk(sims, k_nb, dim=1, largest=True, sorted=True)
                nb_idx[start:stop] = top.indices.to(torch.int32).cpu().numpy()
                nb_sim[start:stop] = top.values.cpu().numpy()
                del sims, top

    # user -> item: drop the -inf slots a user gets when exclusions leave fewer than k items.
    keep = np.isfinite(rec_score)
    user_item = np.empty(int(keep.sum()), dtype=USER_ITEM_DTYPE)
    user_item["user_idx"] = np.broadcast_to(np.arange(n_users, dtype=np.int32)[:, None], keep.shape)[keep]
    user_item["item_idx"] = rec_idx[keep]
    user_item["score"] = rec_score[keep]
    user_item["rank"] = np.broadcast_to(np.arange(1, k_items + 1, dtype=np.int32), keep.shape)[keep]

    user_interest = np.empty(n_users * k_int, dtype=USER_INTEREST_DTYPE)
    user_interest["user_idx"] = np.repeat(np.arange(n_users, dtype=np.int32), k_int)
    user_interest["interest_idx"] = int_idx.reshape(-1)
    user_interest["weight"] = int_w.reshape(-1)

    item_item = np.empty(n_items * k_nb, dtype=ITEM_ITEM_DTYPE)
    item_item["src_idx"] = np.repeat(np.arange(n_items, dtype=np.int32), k_nb)
    item_item["dst_idx"] = nb_idx.reshape(-1)
    item_item["similarity"] = nb_sim.reshape(-1)

    return InterestGraph(
        shop=str(shop),
        model_version=str(model_version),
        round=int(round),
        users=users,
        items=items,
        item_titles=titles,
        item_categories=categories,
        interests=interests,
        user_interest=user_interest,
        user_item=user_item,
        item_item=item_item,
    )


def to_hetero_data(graph: InterestGraph):
    """Convert to a :class:`torch_geometric.data.HeteroData`.

    Node types ``user``, ``item``, ``interest`` (with ``num_nodes`` and the string ids in
    ``node_id``; items also carry ``title`` and ``category``). Edge types
    ``(user, interested_in, interest)``, ``(user, recommended, item)`` and
    ``(item, similar_to, item)``, each with ``edge_index`` (``[2, E]`` int64), ``edge_weight``
    (``[E]`` float32) and ``edge_attr`` (the same weights as ``[E, 1]``); recommendations also
    carry their 1-based ``rank``.
    """
    import torch
    from torch_geometric.data import HeteroData

    data = HeteroData()
    data["user"].num_nodes = graph.num_users
    data["user"].node_id = list(graph.users)
    data["item"].num_nodes = graph.num_items
    data["item"].node_id = list(graph.items)
    data["item"].title = list(graph.item_titles)
    data["item"].category = list(graph.item_categories)
    data["interest"].num_nodes = graph.num_interests
    data["interest"].node_id = list(graph.interests)

    def put(key: tuple[str, str, str], edges: np.ndarray, src: str, dst: str, weight: str) -> None:
        index = np.stack([edges[src].astype(np.int64), edges[dst].astype(np.int64)])
        w = torch.from_numpy(np.ascontiguousarray(edges[weight], dtype=np.float32))
        store = data[key]
        store.edge_index = torch.from_numpy(index)
        store.edge_weight = w
        store.edge_attr = w.view(-1, 1).clone()

    put(("user", "interested_in", "interest"), graph.user_interest, "user_idx", "interest_idx", "weight")
    put(("user", "recommended", "item"), graph.user_item, "user_idx", "item_idx", "score")
    data["user", "recommended", "item"].rank = torch.from_numpy(np.ascontiguousarray(graph.user_item["rank"], dtype=np.int64))
    put(("item", "similar_to", "item"), graph.item_item, "src_idx", "dst_idx", "similarity")
    data.shop = graph.shop
    data.model_version = graph.model_version
    data.round = graph.round
    return data

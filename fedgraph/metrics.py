"""Top-K ranking metrics for held-out interactions (binary relevance).

Conventions
-----------
* ``ranked`` is an integer array [U, >=k] of item indices, best first. The value ``-1`` is
  padding (fewer than k candidate items) and never counts as a hit.
* ``relevant[u]`` is the collection of held-out (test) items of user ``u``. Users with no
  relevant items get ``NaN`` from the per-user metrics; :func:`evaluate_ranking` skips them.
* Recall@k follows the LightGCN / NGCF evaluation code: hits in the top k divided by the total
  number of relevant items ``|R_u|`` (not by ``min(|R_u|, k)``), so a user with more than k
  test items cannot reach recall 1.
* NDCG@k uses gains ``1 / log2(rank + 1)`` with 1-based ranks; the ideal DCG puts
  ``min(|R_u|, k)`` relevant items at the top.
* :func:`top_k_items` breaks score ties towards the lower item index, so rankings (and thus
  metrics) do not depend on the device or on ``torch.topk``'s unspecified tie order.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import numpy as np
import torch

__all__ = [
    "recall_at_k",
    "ndcg_at_k",
    "top_k_items",
    "evaluate_ranking",
    "aggregate_shops",
]

PAD = -1


def _check_inputs(ranked: np.ndarray, relevant: Sequence[Collection[int]], k: int) -> np.ndarray:
    ranked = np.asarray(ranked)
    if ranked.ndim != 2:
        raise ValueError(f"ranked must be 2-D [users, >=k], got shape {ranked.shape}")
    if not np.issubdtype(ranked.dtype, np.integer):
        raise TypeError(f"ranked must hold integer item indices, got {ranked.dtype}")
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if ranked.shape[1] < k:
        raise ValueError(f"ranked has {ranked.shape[1]} columns, fewer than k={k}")
    if len(relevant) != ranked.shape[0]:
        raise ValueError(f"relevant has {len(relevant)} users, ranked has {ranked.shape[0]}")
    return ranked[:, : int(k)]


def _as_index_list(items: Collection[int] | np.ndarray | None) -> list[int]:
    if items is None:
        return []
    if isinstance(items, (np.ndarray, torch.Tensor)):
        return [int(i) for i in items.reshape(-1).tolist()]
    return [int(i) for i in items]


def _relevant_set(items: Collection[int] | np.ndarray | None) -> set[int]:
    return {i for i in _as_index_list(items) if i >= 0}


def _hits(ranked: np.ndarray, relevant: Sequence[Collection[int]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean hit matrix [U, k] and relevant-set sizes [U].

    A repeated item in a row counts once (at its first position); padding never hits.
    """
    top = _check_inputs(ranked, relevant, k)
    hits = np.zeros(top.shape, dtype=bool)
    sizes = np.zeros(top.shape[0], dtype=np.int64)
    for u, row in enumerate(top):
        rel = _relevant_set(relevant[u])
        sizes[u] = len(rel)
        if not rel:
            continue
        seen: set[int] = set()
        for j, item in enumerate(row.tolist()):
            if item in rel and item not in seen:
                hits[u, j] = True
            seen.add(item)
    return hits, sizes


def recall_at_k(ranked: np.ndarray, relevant: Sequence[Collection[int]], k: int) -> np.ndarray:
    """Per-user recall@k = |top-k ∩ R_u| / |R_u| (LightGCN definition); NaN where R_u is empty."""
    hits, sizes = _hits(ranked, relevant, k)
    out = np.full(len(sizes), np.nan)
    ok = sizes > 0
    out[ok] = hits[ok].sum(axis=1) / sizes[ok]
    return out


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))  # rank r=1..k -> 1/log2(r+1)


def ndcg_at_k(ranked: np.ndarray, relevant: Sequence[Collection[int]], k: int) -> np.ndarray:
    """Per-user NDCG@k with binary gains; IDCG over min(|R_u|, k) items; NaN where R_u is empty."""
    hits, sizes = _hits(ranked, relevant, k)
    disc = _discounts(int(k))
    dcg = hits.astype(np.float64) @ disc
    ideal_cum = np.concatenate([[0.0], np.cumsum(disc)])
    idcg = ideal_cum[np.minimum(sizes, int(k))]
    out = np.full(len(sizes), np.nan)
    ok = sizes > 0
    out[ok] = dcg[ok] / idcg[ok]
    return out


def top_k_items(
    scores: torch.Tensor,
    k: int,
    exclude: Sequence[np.ndarray | Collection[int] | None] | None = None,
    *,
    chunk_size: int = 1024,
) -> np.ndarray:
    """Top-k item indices per user -> int64 array [U, k], best first.

    ``exclude[u]`` (e.g. the user's training items) are never returned. Items whose score is
    ``-inf`` (excluded, or masked by the caller) are not recommended either: when fewer than k
    items remain the row is padded with ``-1``, which the metrics ignore (also when the catalogue
    has fewer than k items). Ties are broken by the lower item index. NaN scores raise
    ``ValueError`` (they usually mean training diverged). Works on any device; rows are
    processed ``chunk_size`` users at a time to bound memory.
    """
    if not isinstance(scores, torch.Tensor):
        scores = torch.as_tensor(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D [users, items], got shape {tuple(scores.shape)}")
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    n_users, n_items = scores.shape
    if exclude is not None and len(exclude) != n_users:
        raise ValueError(f"exclude has {len(exclude)} users, scores has {n_users}")
    out = np.full((n_users, k), PAD, dtype=np.int64)
    k_eff = min(k, n_items)
    if n_users == 0 or k_eff == 0:
        return out

    for start in range(0, n_users, chunk_size):
        stop = min(start + chunk_size, n_users)
        block = scores[start:stop].detach()
        if not torch.is_floating_point(block):
            block = block.double()
        block = block.clone()
        if torch.isnan(block).any():
            bad = int(torch.isnan(block).any(dim=1).nonzero()[0, 0]) + start
            raise ValueError(f"scores contain NaN (first at user {bad})")
        if exclude is not None:
            rows, cols = [], []
            for r, items in enumerate(exclude[start:stop]):
                if isinstance(items, np.ndarray):
                    idx = items.astype(np.int64, copy=False).reshape(-1)
                else:
                    idx = np.asarray(_as_index_list(items), dtype=np.int64)
                if idx.size == 0:
                    continue
                if idx.min() < 0 or idx.max() >= n_items:
                    raise IndexError(f"exclude[{start + r}] has item indices outside [0, {n_items})")
                rows.append(np.full(idx.size, r, dtype=np.int64))
                cols.append(idx)
            if rows:
                r_t = torch.from_numpy(np.concatenate(rows)).to(block.device)
                c_t = torch.from_numpy(np.concatenate(cols)).to(block.device)
                block[r_t, c_t] = -math.inf
        out[start:stop, :k_eff] = _topk_stable(block, k_eff)
    return out


def _topk_stable(block: torch.Tensor, k: int) -> np.ndarray:
    """torch.topk with ties broken by lower index; -inf entries become PAD."""
    vals, idx = torch.topk(block, k, dim=1, largest=True, sorted=True)
    threshold = vals[:, -1:]  # k-th best score per row
    # Rows where more items share the k-th score than topk kept: which of them are kept is
    # unspecified, so redo those rows taking the lowest-index ones.
    tied = (block == threshold).sum(dim=1) > (vals == threshold).sum(dim=1)
    if bool(tied.any()):
        rows = tied.nonzero()[:, 0]
        sub, thr = block[rows], threshold[rows]
        above = sub > thr
        at = sub == thr
        need = k - above.sum(dim=1, keepdim=True)  # >= 1: fewer than k items beat the k-th
        chosen = above | (at & (torch.cumsum(at.to(torch.int32), dim=1) <= need))
        idx[rows] = chosen.nonzero()[:, 1].reshape(len(rows), k)  # exactly k per row
    # Order the kept items by score, ties by index: sort by index, then stable sort by score.
    idx = torch.sort(idx, dim=1).values
    vals = torch.gather(block, 1, idx)
    order = torch.sort(vals, dim=1, descending=True, stable=True).indices
    idx = torch.gather(idx, 1, order)
    vals = torch.gather(vals, 1, order)
    idx = torch.where(torch.isneginf(vals), torch.full_like(idx, PAD), idx)
    return idx.cpu().numpy()


def evaluate_ranking(ranked: np.ndarray, relevant: Sequence[Collection[int]], k: int = 20) -> dict[str, float | int]:
    """Mean recall@k and NDCG@k over users with at least one relevant item.

    Returns ``{"recall@k": float, "ndcg@k": float, "users": n_evaluated}`` (metrics are NaN when
    no user has relevant items).
    """
    hits, sizes = _hits(ranked, relevant, k)
    ok = sizes > 0
    n = int(ok.sum())
    if n == 0:
        return {f"recall@{k}": math.nan, f"ndcg@{k}": math.nan, "users": 0}
    h, s = hits[ok], sizes[ok]
    recall = h.sum(axis=1) / s
    disc = _discounts(int(k))
    ideal_cum = np.concatenate([[0.0], np.cumsum(disc)])
    ndcg = (h.astype(np.float64) @ disc) / ideal_cum[np.minimum(s, int(k))]
    return {f"recall@{k}": float(recall.mean()), f"ndcg@{k}": float(ndcg.mean()), "users": n}


def figure(value: float | None) -> float:
    """A metric as a float: ``None`` is how a report file stores "no figure" (JSON has no NaN), read as NaN."""
    return math.nan if value is None else float(value)


def aggregate_shops(per_shop: Mapping[str, Mapping[str, float]], weights: Mapping[str, int] | None = None) -> dict[str, object]:
    """Combine per-shop metric dicts into macro and user-weighted averages.

    ``per_shop[shop]`` is an :func:`evaluate_ranking` result; ``weights[shop]`` the number of
    evaluated users (default: each shop's ``"users"`` entry). Every key other than ``"users"``
    is averaged. Returns::

        {"macro": {metric: plain mean over shops},
         "weighted": {metric: sum(w_s * m_s) / sum(w_s)},
         "shops": number of shops, "users": sum of weights,
         "shops_evaluated": shops with at least one figure (not NaN/None)}

    Shops whose metric is NaN (no evaluated users) are left out of both averages for that
    metric; an average with nothing to average is NaN.
    """
    if not per_shop:
        return {"macro": {}, "weighted": {}, "shops": 0, "users": 0, "shops_evaluated": 0}
    shops = list(per_shop)
    if weights is None:
        weights = {s: int(per_shop[s].get("users", 0)) for s in shops}
    missing = [s for s in shops if s not in weights]
    if missing:
        raise KeyError(f"no weight for shop(s) {missing}")
    keys = [key for key in per_shop[shops[0]] if key != "users"]
    for s in shops:
        other = [key for key in per_shop[s] if key != "users"]
        if set(other) != set(keys):
            raise ValueError(f"shop {s!r} has metrics {sorted(other)}, expected {sorted(keys)}")
    w = np.array([float(weights[s]) for s in shops])
    if np.any(w < 0):
        raise ValueError("weights must be non-negative")
    macro: dict[str, float] = {}
    weighted: dict[str, float] = {}
    evaluated = np.zeros(len(shops), dtype=bool)
    for key in keys:
        vals = np.array([figure(per_shop[s][key]) for s in shops])
        ok = ~np.isnan(vals)
        evaluated |= ok
        macro[key] = float(vals[ok].mean()) if ok.any() else math.nan
        wsum = w[ok].sum()
        weighted[key] = float((w[ok] * vals[ok]).sum() / wsum) if wsum > 0 else math.nan
    return {
        "macro": macro,
        "weighted": weighted,
        "shops": len(shops),
        "users": int(w.sum()),
        "shops_evaluated": int(evaluated.sum()) if keys else 0,
    }

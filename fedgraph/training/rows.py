"""Turn a shop's histories into batches of user rows (one user = one row = one DP sample).

Each training row of user ``u`` is built from ``u``'s data alone: a few of the user's own
training items are held out as positives, the most recent of the remaining items form the
user's ego graph (history), and negatives are drawn *uniformly* from the shop's public
catalog (a draw that hits one of the user's items is masked). Nothing in a row depends on
another user, which keeps per-user gradients (and so per-user DP-SGD) exact.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from fedgraph.models.interest_model import EDGE_FEATURES, UserBatch
from fedgraph.shop import ShopData


class RowSampler:
    """Builds :class:`UserBatch` rows for a shop.

    Args:
        data: The shop's prepared data.
        history: Maximum ego-graph size per row (most recent items kept).
        positives: Items to predict per training row.
        negatives: Uniform catalog negatives per training row.
        next_items: Predict the items that follow a random cut of the user's timeline from
            the items before it (default); otherwise random held-out items from the rest.
        negative_range: Optional ``[U, 2]`` half-open item-index range per user from which
            its negatives are drawn (used when several shops are pooled into one table);
            defaults to the whole catalog.
    """

    def __init__(
        self,
        data: ShopData,
        *,
        history: int,
        positives: int,
        negatives: int,
        negative_range: np.ndarray | None = None,
        next_items: bool = True,
    ) -> None:
        if history < 1 or positives < 1 or negatives < 1:
            raise ValueError("history, positives and negatives must all be >= 1")
        self.data = data
        self.history = history
        self.positives = positives
        self.negatives = negatives
        self.next_items = next_items
        if negative_range is None:
            negative_range = np.tile(np.array([0, data.num_items], dtype=np.int64), (data.num_users, 1))
        self.negative_range = negative_range

    def training_batch(self, users: np.ndarray, rng: np.random.Generator) -> UserBatch:
        """Rows for ``users`` (each must have >= 2 training items).

        One number is drawn from ``rng`` per batch; each row then uses its own generator
        seeded by that number and the user's id, so a row is a function of that user's data
        and the seed alone, whoever else is in the batch (user-level DP, see PRIVACY.md).
        """
        b, h, p, n = len(users), self.history, self.positives, self.negatives
        hist = np.zeros((b, h), dtype=np.int64)
        hist_attr = np.zeros((b, h, EDGE_FEATURES), dtype=np.float32)
        hist_mask = np.zeros((b, h), dtype=bool)
        pos = np.zeros((b, p), dtype=np.int64)
        pos_mask = np.zeros((b, p), dtype=bool)
        neg = np.zeros((b, n), dtype=np.int64)
        neg_mask = np.ones((b, n), dtype=bool)
        indptr, items, attr = self.data.indptr, self.data.item, self.data.attr
        cuts = np.full(b, np.iinfo(np.int64).max, dtype=np.int64)  # queries a row may use: position <= cut
        batch_seed = int(rng.integers(0, 2**62))
        for row, u in enumerate(users):
            row_rng = np.random.default_rng([batch_seed, zlib.crc32(str(self.data.users[u]).encode())])
            low, high = self.negative_range[u]
            neg[row] = low + (row_rng.random(n) * (high - low)).astype(np.int64)
            start, stop = indptr[u], indptr[u + 1]
            count = stop - start
            if count < 2:
                raise ValueError(f"user index {u} has {count} training items; training rows need at least 2")
            if self.next_items:
                # A random cut in the user's timeline: predict the items right after it
                # from the items before it (the shape of the temporal hold-out).
                cut = int(row_rng.integers(1, count))
                cuts[row] = cut  # only the searches typed before the first item predicted
                chosen = np.arange(cut, min(cut + p, count))
                rest = np.arange(max(0, cut - h), cut)
                take = len(chosen)
            else:
                take = min(p, count - 1)
                order = row_rng.permutation(count)
                chosen = order[:take]
                rest = np.sort(order[take:])[-h:]  # most recent remaining items
            pos[row, :take] = items[start + chosen]
            pos_mask[row, :take] = True
            hist[row, : len(rest)] = items[start + rest]
            hist_attr[row, : len(rest)] = attr[start + rest]
            hist_mask[row, : len(rest)] = True
            neg_mask[row] = ~np.isin(neg[row], items[start:stop])
        return _with_queries(_to_batch(hist, hist_attr, hist_mask, pos, pos_mask, neg, neg_mask), self.data, users, cuts)

    def encoding_batch(self, users: np.ndarray, history: int | None = None) -> UserBatch:
        """History-only rows (the ``history`` most recent items) to embed ``users``."""
        h = history or self.history
        b = len(users)
        hist = np.zeros((b, h), dtype=np.int64)
        hist_attr = np.zeros((b, h, EDGE_FEATURES), dtype=np.float32)
        hist_mask = np.zeros((b, h), dtype=bool)
        indptr, items, attr = self.data.indptr, self.data.item, self.data.attr
        for row, u in enumerate(users):
            start = max(indptr[u], indptr[u + 1] - h)
            stop = indptr[u + 1]
            hist[row, : stop - start] = items[start:stop]
            hist_attr[row, : stop - start] = attr[start:stop]
            hist_mask[row, : stop - start] = True
        empty_i = np.zeros((b, 0), dtype=np.int64)
        empty_m = np.zeros((b, 0), dtype=bool)
        return _with_queries(_to_batch(hist, hist_attr, hist_mask, empty_i, empty_m, empty_i, empty_m), self.data, users)


def _to_batch(*arrays: np.ndarray) -> UserBatch:
    return UserBatch(*(torch.from_numpy(a) for a in arrays))


def _with_queries(batch: UserBatch, data: ShopData, users: np.ndarray, cuts: np.ndarray | None = None) -> UserBatch:
    """``batch`` with each row's own search queries (:func:`padded_queries`); unchanged when the
    shop has none. A row still holds one user's data only."""
    batch.queries, batch.query_mask = padded_queries(data, users, cuts)
    return batch


def padded_queries(data: ShopData, users: np.ndarray, cuts: np.ndarray | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The embedded search queries of ``users`` (indices into ``data.users``; -1: a user the data
    does not hold, who gets none), ``[B, Q, text_dim]`` padded to the most, and their mask; or
    ``(None, None)`` when the shop has no queries. With ``cuts``, row ``r`` takes only the queries
    made before the user's ``cuts[r]``-th item (``query_pos <= cut``): a training row that
    predicts the items after a cut of the timeline sees no later search."""
    if len(data.query_text) == 0:
        return None, None
    rows = []
    for r, u in enumerate(np.asarray(users, dtype=np.int64)):
        if u < 0:
            rows.append(np.zeros(0, dtype=np.int64))
            continue
        start, stop = int(data.query_indptr[u]), int(data.query_indptr[u + 1])
        at = np.arange(start, stop)
        rows.append(at if cuts is None else at[data.query_pos[start:stop] <= cuts[r]])
    counts = np.array([len(a) for a in rows], dtype=np.int64)
    width = int(counts.max()) if len(rows) else 0
    queries = np.zeros((len(rows), width, data.query_text.shape[1]), dtype=np.float32)
    for r, at in enumerate(rows):
        queries[r, : len(at)] = data.query_text[at]
    return torch.from_numpy(queries), torch.from_numpy(np.arange(width)[None, :] < counts[:, None])

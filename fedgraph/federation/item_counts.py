"""Federated EASE: the shops' item co-occurrence counts, summed by the server.

EASE (:mod:`fedgraph.models.ease`) needs only the Gram matrix :math:`G = X^\\top X` of the
user-item matrix, and the Gram matrix of all shops' customers together is the **sum** of the
shops' Gram matrices over a shared item space. So EASE on all data pooled can be fitted without
pooling any customer's row: each shop sends its counts (how many of its customers have both
item *i* and item *j*), the server adds them, and each shop fits EASE on the sum restricted to
its own catalog (``model.shop_private = "federated_ease"``).

**Shared item space.** Items are public catalog entries; two shops' items are the same column
when both their id and their title agree (:func:`item_keys`), e.g. Online Retail's countries
selling the same stock code. Shops without common items get nothing from the sum (their block
of it is their own counts).

**What leaves a shop.** Its item keys (public catalog) and its co-occurrence counts: an
aggregate over its customers, *not* differentially private. It is therefore refused under
``privacy.enabled`` and under secure aggregation (the server would see one shop's counts in
the clear), see PRIVACY.md. In a simulation the server writes the sum to the run directory
(``federated_counts.npz``) where each shop reads it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from fedgraph.atomic import atomic_write_bytes
from fedgraph.models.ease import interaction_matrix
from fedgraph.shop import ShopData

#: The views whose counts a simulation's shops send: training (validation held out) and test view.
VIEWS = ("train", "final")


def item_keys(data: ShopData) -> np.ndarray:
    """The shop's items as keys of the shared item space: ``id \\x1f title``."""
    return np.char.add(np.char.add(data.items.astype(str), "\x1f"), data.item_titles.astype(str))


def upper_counts(data: ShopData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The upper triangle (diagonal included) of the shop's Gram matrix, as COO ``(row, col, count)``
    over the shop's own item indices (int32, int32, float32)."""
    x = interaction_matrix(data.indptr, data.item, data.num_items)
    upper = sp.triu(x.T @ x).tocoo()
    return upper.row.astype(np.int32), upper.col.astype(np.int32), upper.data.astype(np.float32)


class CountSum:
    """The server's running sum of the shops' counts over the union of their item keys."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.shops = 0

    def add(self, keys: np.ndarray, row: np.ndarray, col: np.ndarray, count: np.ndarray) -> None:
        if len(row) and (max(int(row.max()), int(col.max())) >= len(keys) or min(int(row.min()), int(col.min())) < 0):
            raise ValueError("item counts: an index lies outside the shop's item keys")
        self.parts.append((np.asarray(keys, dtype=str), row, col, count))
        self.shops += 1

    def total(self) -> tuple[np.ndarray, sp.csr_matrix]:
        """``(vocabulary, symmetric summed Gram matrix)``."""
        vocab = np.unique(np.concatenate([p[0] for p in self.parts])) if self.parts else np.empty(0, dtype=str)
        rows, cols, vals = [], [], []
        for keys, row, col, count in self.parts:
            index = np.searchsorted(vocab, keys)
            rows.append(index[row])
            cols.append(index[col])
            vals.append(count.astype(np.float64))
        n = len(vocab)
        r, c, v = (np.concatenate(a) if a else np.empty(0) for a in (rows, cols, vals))
        upper = sp.csr_matrix((v, (r, c)), shape=(n, n))
        full = upper + sp.triu(upper, 1).T
        return vocab, full.tocsr()


def save_counts(path: Path, totals: dict[str, tuple[np.ndarray, sp.csr_matrix]], shops: int) -> Path:
    """Write every view's ``(vocabulary, sum)`` to one ``.npz`` file, atomically."""
    arrays: dict[str, np.ndarray] = {"shops": np.array(shops)}
    for view, (vocab, matrix) in totals.items():
        arrays[f"{view}_vocab"] = vocab
        arrays[f"{view}_indptr"], arrays[f"{view}_indices"], arrays[f"{view}_data"] = matrix.indptr, matrix.indices, matrix.data
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return atomic_write_bytes(path, buffer.getvalue())


def shop_gram(path: Path, view: str, data: ShopData) -> np.ndarray:
    """The federation's summed Gram matrix restricted to ``data``'s items (``[I, I]``, float64;
    items no shop has counts for stay 0).

    Raises:
        FileNotFoundError: the federation's counts were not computed for this run.
    """
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} is missing: the federated item counts were not computed (model.shop_private=federated_ease)")
    with np.load(path, allow_pickle=False) as z:
        vocab = z[f"{view}_vocab"]
        n = len(vocab)
        matrix = sp.csr_matrix((z[f"{view}_data"], z[f"{view}_indices"], z[f"{view}_indptr"]), shape=(n, n))
    keys = item_keys(data)
    pos = np.searchsorted(vocab, keys)
    pos = np.minimum(pos, max(n - 1, 0))
    known = (n > 0) & (vocab[pos] == keys) if n else np.zeros(len(keys), dtype=bool)
    out = np.zeros((len(keys), len(keys)), dtype=np.float64)
    idx = np.flatnonzero(known)
    if len(idx):
        out[np.ix_(idx, idx)] = matrix[pos[idx]][:, pos[idx]].toarray()
    return out

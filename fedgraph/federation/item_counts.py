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
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from fedgraph.atomic import atomic_write_bytes

if TYPE_CHECKING:
    import torch
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


def load_counts(path: Path, view: str) -> tuple[np.ndarray, sp.csr_matrix]:
    """``(vocabulary, summed Gram matrix)`` of one view.

    Raises:
        FileNotFoundError: the federation's counts were not computed for this run.
    """
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} is missing: the federated item counts were not computed (model.shop_private=federated_ease)")
    with np.load(path, allow_pickle=False) as z:
        vocab = z[f"{view}_vocab"]
        n = len(vocab)
        return vocab, sp.csr_matrix((z[f"{view}_data"], z[f"{view}_indices"], z[f"{view}_indptr"]), shape=(n, n))


def shop_columns(vocab: np.ndarray, data: ShopData) -> tuple[np.ndarray, np.ndarray]:
    """Each of the shop's items' column in ``vocab`` and whether it is there at all."""
    keys = item_keys(data)
    if len(vocab) == 0:
        return np.zeros(len(keys), dtype=np.int64), np.zeros(len(keys), dtype=bool)
    pos = np.minimum(np.searchsorted(vocab, keys), len(vocab) - 1)
    return pos, vocab[pos] == keys


class FederatedEASE:
    """EASE fitted once on the federation's summed counts over the whole shared item space,
    scored for one shop's customers and items: exactly EASE on the pooled data of the shops that
    sent counts (in a simulation, the shops in the federated rounds: a shop with no customer to
    train on sends none, and its one-item customers would only add to the diagonal), with no
    customer's row leaving a shop.

    Args:
        vocab, gram: the view's summed counts (:func:`load_counts`).
        l2, max_items: as :class:`~fedgraph.models.ease.EASE`.
    """

    def __init__(self, vocab: np.ndarray, gram: sp.csr_matrix, l2: float, *, max_items: int = 10000):
        from fedgraph.models.ease import EASE

        self.vocab, self.l2 = vocab, float(l2)
        self.model = EASE(l2, max_items=max_items).fit_gram(gram.toarray(), popularity=gram.diagonal())

    def scores(self, data: ShopData, rows: sp.csr_matrix) -> torch.Tensor:
        """``[rows, shop items]`` scores of the shop's users ``rows`` (its own ``[users, items]`` matrix rows)."""
        import torch

        pos, known = shop_columns(self.vocab, data)
        cols = np.flatnonzero(known)
        coo = rows[:, cols].tocoo()
        mapped = sp.csr_matrix((coo.data, (coo.row, pos[cols][coo.col])), shape=(rows.shape[0], len(self.vocab)))
        out = torch.zeros(rows.shape[0], data.num_items)
        if len(cols):
            out[:, torch.from_numpy(cols)] = self.model.scores(mapped)[:, torch.from_numpy(pos[cols])]
        return out


def shop_gram(path: Path, view: str, data: ShopData) -> np.ndarray:
    """The federation's summed Gram matrix restricted to ``data``'s items (``[I, I]``, float64;
    items no shop has counts for stay 0).

    Raises:
        FileNotFoundError: the federation's counts were not computed for this run.
    """
    vocab, matrix = load_counts(path, view)
    pos, known = shop_columns(vocab, data)
    out = np.zeros((data.num_items, data.num_items), dtype=np.float64)
    idx = np.flatnonzero(known)
    if len(idx):
        out[np.ix_(idx, idx)] = matrix[pos[idx]][:, pos[idx]].toarray()
    return out

r"""Item-based k-nearest-neighbour recommendation with cosine similarity.

Sarwar, B., Karypis, G., Konstan, J., Riedl, J. (2001). "Item-based collaborative filtering
recommendation algorithms". WWW 2001; Deshpande & Karypis (2004), "Item-based top-N
recommendation algorithms", ACM TOIS.

With :math:`X \in \{0,1\}^{U \times I}` the shop's user-item matrix, the similarity of items
:math:`i \ne j` is the cosine of their columns,

.. math::
    S_{ij} = \frac{x_i^\top x_j}{\|x_i\|\,\|x_j\|},

each item keeps its ``neighbours`` most similar items (the rest of its row is set to 0), and a
user's score for item :math:`j` is :math:`\sum_{i \in \mathcal N(u)} S_{ij}`, i.e.
:math:`x_u^\top S`. A shop-local model (item ids of one shop), never sent anywhere.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


class ItemKNN:
    """Item-kNN fitted on one shop's interactions (see module docs).

    Args:
        neighbours: similar items kept per item (>= 1).
    """

    def __init__(self, neighbours: int = 100):
        if int(neighbours) < 1:
            raise ValueError(f"ItemKNN: neighbours must be >= 1, got {neighbours!r}")
        self.neighbours = int(neighbours)
        self.similarity: sp.csr_matrix = sp.csr_matrix((0, 0))

    def fit(self, matrix: sp.csr_matrix) -> ItemKNN:
        """Fit on a ``[users, items]`` binary matrix; returns ``self``."""
        x = sp.csc_matrix(matrix, dtype=np.float64)
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0)).ravel())
        inverse = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        sim = torch.from_numpy((x.T @ x).toarray().astype(np.float32))
        inv = torch.from_numpy(inverse.astype(np.float32))
        sim.mul_(inv.unsqueeze(1)).mul_(inv.unsqueeze(0)).fill_diagonal_(0.0)
        n = sim.shape[0]
        k = min(self.neighbours, max(n - 1, 1))
        if n > k:  # keep each row's k largest
            top = torch.topk(sim, k, dim=1)
            kept = torch.zeros_like(sim).scatter_(1, top.indices, top.values)
            sim = kept
        self.similarity = sp.csr_matrix(sim.numpy())
        return self

    def scores(self, matrix: sp.csr_matrix) -> torch.Tensor:
        """``[rows, items]`` scores of the users in ``matrix``."""
        return torch.from_numpy(np.asarray((sp.csr_matrix(matrix, dtype=np.float32) @ self.similarity).toarray(), dtype=np.float32))

r"""EASE: a shallow linear item-item autoencoder with a closed-form solution.

Steck, H. (2019). "Embarrassingly Shallow Autoencoders for Sparse Data". WWW 2019.

With :math:`X \in \{0,1\}^{U \times I}` the shop's user-item matrix and
:math:`G = X^\top X` its Gram matrix, EASE solves

.. math::
    \hat B = \arg\min_B \|X - XB\|_F^2 + \lambda \|B\|_F^2 \quad \text{s.t.}\ \operatorname{diag}(B) = 0,

whose solution is :math:`P = (G + \lambda I)^{-1}`, :math:`\hat B_{ij} = -P_{ij} / P_{jj}`
(:math:`i \ne j`), :math:`\hat B_{jj} = 0`. A user's scores are :math:`x_u^\top \hat B`.

Here EASE is a *shop-local* model: it is fitted on one shop's own log, holds item ids of that
shop, and is never sent anywhere. It is used three ways: the ``ease`` baseline (each shop
alone), the shop-private part of the hybrid (:mod:`fedgraph.models.hybrid`), and, with a
noised Gram matrix (:func:`dp_gram`), the user-level DP baseline ``ease_dp``.

**Cost.** Only items with at least one training interaction enter the inverse (an item nobody
has touched has a zero column in :math:`X` and scores 0); of those, at most ``max_items`` (the
most popular, 10,000 by default) do. The inverse is a float32 Cholesky, :math:`O(n^3)`;
:meth:`EASE.fit` builds the Gram matrix of the active items only, so peak memory is a few
``n²`` float32/float64 matrices (``simulations/bench_ease.py``; figures in simulations/RESULTS.md).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch


def interaction_matrix(indptr: np.ndarray, item: np.ndarray, num_items: int, *, latest: int = 0) -> sp.csr_matrix:
    """The binary ``[users, num_items]`` matrix of a CSR history (``item[indptr[u]:indptr[u+1]]``, oldest first).

    With ``latest`` > 0 each user keeps only the ``latest`` most recent items (row clipping for
    :func:`dp_gram`).
    """
    counts = np.diff(indptr)
    if latest > 0:
        kept = np.minimum(counts, latest)
        # position of each kept entry: the last ``kept[u]`` entries of user u's row
        starts = np.repeat(indptr[1:] - kept, kept)
        offsets = np.arange(kept.sum()) - np.repeat(np.cumsum(kept) - kept, kept)
        cols, counts = item[starts + offsets], kept
    else:
        cols = item
    rows = np.repeat(np.arange(len(counts)), counts)
    matrix = sp.csr_matrix((np.ones(len(cols), dtype=np.float32), (rows, cols)), shape=(len(counts), num_items))
    matrix.data[:] = 1.0  # duplicates (none in prepared data) would sum; relevance is binary
    return matrix


def gram(matrix: sp.csr_matrix) -> np.ndarray:
    """:math:`X^\\top X` as a dense float64 array."""
    return np.asarray((matrix.T @ matrix).toarray(), dtype=np.float64)


def dp_gram(matrix: sp.csr_matrix, *, max_items_per_user: int, noise_multiplier: float, rng: np.random.Generator) -> np.ndarray:
    r"""A user-level DP release of the Gram matrix (Gaussian mechanism, one release).

    ``matrix`` must already be row-clipped to at most ``max_items_per_user`` items
    (:func:`interaction_matrix` with ``latest``). Adding or removing one user changes
    :math:`G` by :math:`x x^\top`, whose upper triangle (diagonal included) has L2 norm
    :math:`\sqrt{m(m+1)/2} \le m` for :math:`m` items; the upper triangle gets i.i.d.
    :math:`\mathcal N(0, (\sigma m)^2)` noise and is mirrored, so the release is the Gaussian
    mechanism with noise multiplier :math:`\sigma` and sensitivity :math:`m`.

    Raises:
        ValueError: a row holds more than ``max_items_per_user`` items.
    """
    per_user = np.diff(matrix.indptr)
    if len(per_user) and per_user.max() > max_items_per_user:
        raise ValueError(f"dp_gram: a user has {per_user.max()} items, above max_items_per_user={max_items_per_user}; clip rows first")
    g = gram(matrix)
    n = g.shape[0]
    noise = rng.normal(0.0, noise_multiplier * max_items_per_user, size=(n, n))
    upper = np.triu(noise)
    return g + upper + np.triu(upper, 1).T


class EASE:
    """EASE fitted on one shop's interactions (see module docs).

    Args:
        l2: the ridge weight :math:`\\lambda` (> 0).
        max_items: at most this many active items (the most popular) enter the inverse.
    """

    def __init__(self, l2: float = 200.0, *, max_items: int = 10000):
        if not l2 > 0:
            raise ValueError(f"EASE: l2 must be > 0, got {l2!r}")
        self.l2 = float(l2)
        self.max_items = int(max_items)
        self.active: np.ndarray = np.empty(0, dtype=np.int64)
        self.weights: torch.Tensor = torch.empty(0, 0)
        self.num_items = 0

    def fit(self, matrix: sp.csr_matrix) -> EASE:
        """Fit on a ``[users, items]`` binary matrix; returns ``self``.

        Only the columns of the active items enter the Gram matrix (memory ``8 n²`` bytes for
        ``n`` active items, not ``8 I²`` for the whole catalog).
        """
        popularity = np.asarray(matrix.sum(axis=0), dtype=np.float64).ravel()
        active = self._active(popularity)
        self.num_items = matrix.shape[1]
        self.active = active
        self.weights = self._weights(gram(sp.csc_matrix(matrix)[:, active]))
        return self

    def _active(self, popularity: np.ndarray) -> np.ndarray:
        active = np.flatnonzero(popularity > 0)
        if len(active) > self.max_items:
            active = np.sort(active[np.argsort(-popularity[active], kind="stable")[: self.max_items]])
        return active

    def _weights(self, sub_gram: np.ndarray) -> torch.Tensor:
        sub = torch.from_numpy(np.ascontiguousarray(sub_gram, dtype=np.float32))
        sub = 0.5 * (sub + sub.T)
        sub.diagonal().add_(self.l2)
        # float32 Cholesky: G + λI is positive definite for an exact Gram matrix (a noised one
        # may not be: then the general inverse)
        factor, info = torch.linalg.cholesky_ex(sub)
        p = torch.cholesky_inverse(factor) if int(info) == 0 else torch.linalg.inv(sub)
        del factor, sub
        b = p.div_(-torch.diagonal(p).clone().unsqueeze(0))
        b.fill_diagonal_(0.0)
        return b

    def fit_gram(self, g: np.ndarray, *, popularity: np.ndarray | None = None) -> EASE:
        """Fit from a (possibly noised) Gram matrix ``g`` ``[items, items]``; returns ``self``.

        ``popularity`` ranks items for the ``max_items`` cap and marks the active ones
        (> 0); by default the diagonal of ``g``.
        """
        self.num_items = g.shape[0]
        self.active = self._active(np.diag(g) if popularity is None else np.asarray(popularity, dtype=np.float64))
        self.weights = self._weights(g[np.ix_(self.active, self.active)])
        return self

    def scores(self, matrix: sp.csr_matrix) -> torch.Tensor:
        """``[rows, items]`` scores of the users in ``matrix`` (0 for items outside the active set)."""
        out = torch.zeros(matrix.shape[0], self.num_items)
        if len(self.active):
            x = torch.from_numpy(matrix[:, self.active].toarray().astype(np.float32))
            out[:, torch.from_numpy(self.active)] = x @ self.weights
        return out


def dp_ease_noise(epsilon: float, delta: float, *, accountant: str = "rdp") -> float:
    """Noise multiplier of one Gaussian release at (ε, δ), from Opacus' accountant (sample rate 1, one step)."""
    from fedgraph.privacy import noise_multiplier_for

    if not math.isfinite(epsilon):
        return 0.0
    return noise_multiplier_for(epsilon, delta, 1.0, 1, accountant)

"""Public item features: what the item tower sees.

An item's feature vector is built from *public catalog data only* (its text and price), so
computing it involves no customer data and costs no privacy:

``[ text | smoothed text | price ]`` where

* ``text`` is the configured text encoder's embedding (:mod:`fedgraph.features.encoders`; the
  default MiniLM is 384-d), unit norm, of "title. description. Category: c";
* ``smoothed text`` is one or more steps of symmetric-normalised propagation over the shop's
  item–item text-similarity graph (each item linked to its ``neighbours`` most similar
  items), i.e. SGC-style pre-propagation (Wu et al., 2019, "Simplifying Graph Convolutional
  Networks"), done with PyTorch Geometric's graph utilities. The graph is made from catalog
  text, never from co-purchases, so no user's data flows into another user's features;
* ``price`` is ``(log1p(price) - 1.5)`` with a fixed shift, identical in every shop.

The layout is identical in every shop, which is what lets one item tower serve all of them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.utils import add_remaining_self_loops, degree, scatter, to_undirected

PRICE_SHIFT = 1.5
#: Text width of data and run directories prepared before the encoder's width was recorded
#: (they were all embedded with MiniLM).
LEGACY_TEXT_DIM = 384


def feature_size(text_dim: int, hops: int = 1) -> int:
    """Length of an item feature vector: the text block (``text_dim``), the smoothed text block
    when ``hops > 0``, and the price."""
    return text_dim * (2 if hops > 0 else 1) + 1


def text_knn_edges(text: np.ndarray, neighbours: int, chunk: int = 4096) -> torch.Tensor:
    """Directed ``[2, E]`` edges from each item to its ``neighbours`` most similar items.

    Similarity is the dot product of unit-norm text embeddings; computed in chunks so the
    full ``I x I`` matrix is never held for large catalogs.
    """
    x = torch.from_numpy(np.ascontiguousarray(text, dtype=np.float32))
    n = x.shape[0]
    k = min(neighbours, n - 1)
    if k <= 0:
        return torch.empty(2, 0, dtype=torch.long)
    rows, cols = [], []
    for start in range(0, n, chunk):
        sim = x[start : start + chunk] @ x.T
        idx = torch.arange(start, min(start + chunk, n))
        sim[torch.arange(len(idx)), idx] = float("-inf")  # no self match
        top = sim.topk(k, dim=1).indices
        rows.append(idx.repeat_interleave(k))
        cols.append(top.reshape(-1))
    return torch.stack([torch.cat(rows), torch.cat(cols)])


def propagate(x: torch.Tensor, edge_index: torch.Tensor, hops: int) -> torch.Tensor:
    """``hops`` steps of ``D^-1/2 (A + I) D^-1/2 x`` over an undirected version of the graph."""
    n = x.shape[0]
    edge_index = to_undirected(edge_index, num_nodes=n)
    edge_index, _ = add_remaining_self_loops(edge_index, num_nodes=n)
    src, dst = edge_index
    deg = degree(dst, n, dtype=x.dtype)
    norm = deg[src].rsqrt() * deg[dst].rsqrt()
    for _ in range(hops):
        x = scatter(x[src] * norm.unsqueeze(1), dst, dim=0, dim_size=n, reduce="sum")
    return x


def item_features(text: np.ndarray, prices: np.ndarray, *, neighbours: int = 10, hops: int = 1) -> np.ndarray:
    """Build the ``[I, feature_size()]`` float32 feature matrix of one shop's catalog."""
    text = np.asarray(text, dtype=np.float32)
    if text.ndim != 2 or text.shape[0] != len(prices):
        raise ValueError(f"text embeddings {text.shape} do not match {len(prices)} prices")
    parts = [text]
    if hops > 0:
        edges = text_knn_edges(text, neighbours)
        smoothed = propagate(torch.from_numpy(text), edges, hops) if edges.numel() else torch.from_numpy(text)
        parts.append(torch.nn.functional.normalize(smoothed, dim=1).numpy())
    price = (np.log1p(np.clip(np.asarray(prices, dtype=np.float64), 0, None)) - PRICE_SHIFT).astype(np.float32)
    parts.append(price[:, None])
    return np.concatenate(parts, axis=1).astype(np.float32)

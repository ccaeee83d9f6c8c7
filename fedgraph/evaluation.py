"""Evaluation on held-out interactions: Recall@K and NDCG@K per shop.

Every method is scored the same way: for each user with held-out items, rank all of the
shop's catalog items, excluding the items the user already has in training, and compare the
top K with the held-out items (:mod:`fedgraph.metrics`).
"""

from __future__ import annotations

import numpy as np
import torch

from fedgraph.metrics import evaluate_ranking, top_k_items
from fedgraph.models.interest_model import InterestModel, text_profile
from fedgraph.shop import ShopData
from fedgraph.training.rows import RowSampler


@torch.no_grad()
def item_embeddings(model: InterestModel, data: ShopData, device: torch.device | str = "cpu", chunk: int = 8192) -> torch.Tensor:
    """``[I, dim + 1]`` embeddings (unit vector, then bias) of every catalog item of the shop."""
    model.to(device).eval()
    feats = torch.from_numpy(data.item_features)
    index = torch.arange(len(feats))
    parts = [model.item_embeddings(feats[s : s + chunk].to(device), index[s : s + chunk].to(device)) for s in range(0, len(feats), chunk)]
    return torch.cat(parts) if parts else torch.empty(0, model.item_embedding_size)


@torch.no_grad()
def user_embeddings(
    model: InterestModel,
    data: ShopData,
    users: np.ndarray,
    *,
    history: int,
    items: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 2048,
) -> torch.Tensor:
    """``[len(users), dim]`` embeddings from each user's ``history`` most recent training items."""
    model.to(device).eval()
    items = item_embeddings(model, data, device) if items is None else items
    sampler = RowSampler(data, history=history, positives=1, negatives=1)
    out = []
    for start in range(0, len(users), batch_size):
        batch = sampler.encoding_batch(users[start : start + batch_size], history).to(device)
        out.append(
            model.user_embeddings_from(items[batch.history], batch.history_attr, batch.history_mask, batch.queries, batch.query_mask)
        )
    return torch.cat(out) if out else torch.empty(0, model.user_embedding_size, device=device)


def _relevant_and_exclude(data: ShopData, users: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    return [data.test_items(u) for u in users], [data.history(u) for u in users]


@torch.no_grad()
def model_scores(
    model: InterestModel, data: ShopData, users: np.ndarray, *, history: int = 64, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """``[len(users), items]`` scores of ``model`` for ``users`` of the shop (on the CPU)."""
    items = item_embeddings(model, data, device)
    return model.score(user_embeddings(model, data, users, history=history, items=items, device=device), items).cpu()


def evaluate_scores(data: ShopData, users: np.ndarray, scores: torch.Tensor, *, k: int = 20) -> dict[str, float | int]:
    """Recall@k / NDCG@k of any ``[len(users), items]`` scores on the shop's held-out items
    (each user's training items excluded): the one scoring path of every method."""
    relevant, exclude = _relevant_and_exclude(data, users)
    return evaluate_ranking(top_k_items(scores, k, exclude), relevant, k)


def evaluate_model(
    model: InterestModel, data: ShopData, *, k: int = 20, history: int = 64, device: torch.device | str = "cpu"
) -> dict[str, float | int]:
    """Recall@k / NDCG@k of ``model`` on the shop's held-out items."""
    users = data.evaluable_users()
    return evaluate_scores(data, users, model_scores(model, data, users, history=history, device=device), k=k)


@torch.no_grad()
def content_scores(data: ShopData, users: np.ndarray, *, history: int) -> torch.Tensor:
    """``[len(users), items]`` cosine between every item's text embedding (the first
    :attr:`~fedgraph.shop.ShopData.text_dim` columns of its public features) and the mean of those of
    the user's ``history`` most recent training items (and of the user's own search queries,
    if the shop logs them): a recommender with no training and no other user's data (the
    ``content`` baseline). Why the text block and not the whole feature
    vector: simulations/RESULTS.md, 'Implementation measurements'."""
    text = torch.from_numpy(data.item_features[:, : data.text_dim]).float()
    feats = torch.nn.functional.normalize(text, dim=1)
    batch = RowSampler(data, history=history, positives=1, negatives=1).encoding_batch(users, history)
    return text_profile(feats[batch.history], batch.history_mask, batch.queries, batch.query_mask) @ feats.T


def evaluate_content(data: ShopData, *, k: int = 20, history: int = 64, chunk: int = 4096) -> dict[str, float | int]:
    """The content baseline: the unseen items closest in text embedding to the user's recent items."""
    users = data.evaluable_users()
    relevant, exclude = _relevant_and_exclude(data, users)
    top = [
        top_k_items(content_scores(data, users[s : s + chunk], history=history), k, exclude[s : s + chunk])
        for s in range(0, len(users), chunk)
    ]
    return evaluate_ranking(np.concatenate(top) if top else np.empty((0, k), dtype=np.int64), relevant, k)


def popularity_scores(data: ShopData) -> np.ndarray:
    """Number of distinct training users per item (the popularity baseline's score)."""
    return np.bincount(data.item, minlength=data.num_items).astype(np.float64)


def evaluate_popularity(data: ShopData, *, k: int = 20) -> dict[str, float | int]:
    """The popularity baseline: every user gets the shop's most popular unseen items."""
    users = data.evaluable_users()
    pop = torch.from_numpy(popularity_scores(data))
    scores = pop.unsqueeze(0).expand(len(users), -1)
    relevant, exclude = _relevant_and_exclude(data, users)
    return evaluate_ranking(top_k_items(scores, k, exclude), relevant, k)

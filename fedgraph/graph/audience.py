r"""Audiences for marketing: the customers of a shop most interested in an interest or a topic.

Two kinds of query, one result (:class:`Audience`):

* an **interest** of the shop's graph (a catalog category): the customers whose
  ``interested_in`` edge to it weighs most (:meth:`fedgraph.graph.GraphStore.interest_audience`).
  Answered from the graph store alone; only customers with the interest among their top
  ``graph.top_k_interests`` are in it.
* a free-text **topic** (``"garden decoration"``): the topic is embedded with the run's own text
  encoder and scored as a new item described by that text would be. Its feature row is the
  topic's text vector, the neighbour-smoothed block of its ``features.neighbours`` nearest
  catalog items (by text cosine), and the shop's median price feature. Every customer's score is
  the model's :math:`z_u^\top e_t / \tau` plus the content term :math:`s\,\cos(c_u, t)`, the
  same score recommendations rank by, with no item bias (the topic has no shop-private part). It
  needs the model (:func:`fedgraph.graph.serving.open_served_shop`). Every customer is scored,
  so it ranks all of them. Its cost is one user-embedding pass over the shop (linear in
  customers × history); ``simulations/bench_audience.py`` measures it.

A query that names one of the shop's interests exactly is an interest query; anything else is
a topic (:func:`audience`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fedgraph.atomic import atomic_path


@dataclass(frozen=True)
class AudienceMember:
    rank: int
    user: str
    score: float


@dataclass
class Audience:
    """``members`` ranked by ``score`` (edge weight for an interest, model score for a topic)."""

    shop: str
    query: str
    basis: str  # "interest" or "topic"
    members: list[AudienceMember] = field(default_factory=list)
    scored_users: int = 0

    def as_dict(self) -> dict:
        return {
            "shop": self.shop,
            "query": self.query,
            "basis": self.basis,
            "scored_users": self.scored_users,
            "members": [m.__dict__ for m in self.members],
        }

    def write_csv(self, path: str | Path) -> Path:
        """``rank,user,score,basis,query`` rows, written atomically."""
        with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
            out = csv.writer(handle)
            out.writerow(["rank", "user", "score", "basis", "query"])
            for m in self.members:
                out.writerow([m.rank, m.user, f"{m.score:.6g}", self.basis, self.query])
        return Path(path)


def interest_audience(store, shop: str, interest: str, *, top: int = 100) -> Audience:
    """The customers whose interest edge to ``interest`` weighs most (see module docs)."""
    rows = store.interest_audience(shop, interest, k=top)
    members = [AudienceMember(rank, user, weight) for rank, (user, weight) in enumerate(rows, start=1)]
    return Audience(shop, interest, "interest", members, scored_users=int(store.summary(shop)["n_users"]))


def topic_features(served, topic: str) -> torch.Tensor:
    """The ``[1, F]`` feature row of a new item described by ``topic`` (see module docs)."""
    from fedgraph.features.encoders import build_encoder

    encoder = build_encoder(served.config, progress=False)
    text = torch.as_tensor(np.asarray(encoder.encode([topic]), dtype=np.float32))
    features = torch.from_numpy(served.data.item_features)
    width = text.shape[1]
    if features.shape[1] < width:
        raise ValueError(f"item features are {features.shape[1]} wide, narrower than the encoder's {width}")
    row = features.median(dim=0).values.clone()
    row[:width] = text[0]
    rest = features.shape[1] - width - 1  # the neighbour-smoothed block, if features.hops > 0
    if rest > 0:
        catalog = torch.nn.functional.normalize(features[:, :width], dim=1)
        k = min(int(served.config.features.neighbours), len(catalog))
        nearest = (catalog @ torch.nn.functional.normalize(text, dim=1)[0]).topk(k).indices
        row[width : width + rest] = torch.nn.functional.normalize(features[nearest, width : width + rest].mean(0), dim=0)
    return row.unsqueeze(0)


@torch.no_grad()
def topic_audience(served, topic: str, *, top: int = 100) -> Audience:
    """Every customer of ``served`` (:class:`fedgraph.graph.serving.ServedShop`) scored for a new
    item described by ``topic``; the ``top`` highest."""
    if not topic.strip():
        raise ValueError("the topic is empty; give an interest of the shop or a few words, e.g. 'garden decoration'")
    item = served.model.item_embeddings(topic_features(served, topic))  # no item index: bias 0
    scores = served.model.score(served.user_embeddings(), item)[:, 0]
    k = min(int(top), len(scores))
    best = scores.topk(k)
    users = served.data.users
    members = [
        AudienceMember(rank, str(users[i]), float(v))
        for rank, (v, i) in enumerate(zip(best.values.tolist(), best.indices.tolist()), start=1)
    ]
    return Audience(served.shop, topic, "topic", members, scored_users=len(scores))


def audience(location: str | Path, store, shop: str, query: str, *, top: int = 100) -> Audience:
    """An interest audience if ``query`` is one of the shop's interests, else a topic audience
    (which opens the model at ``location``, a run or state directory)."""
    if query in store.interests(shop):
        return interest_audience(store, shop, query, top=top)
    from fedgraph.graph.serving import open_served_shop

    return topic_audience(open_served_shop(location, shop), query, top=top)

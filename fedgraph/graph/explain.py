r"""Why was an item recommended to a customer? The global model's score, taken apart over the
customer's own history.

For a user :math:`u` with history items :math:`j` and a candidate :math:`i`, the model scores
(:class:`fedgraph.models.InterestModel`)

.. math::
    s_{ui} = \underbrace{z_u^\top e_i / \tau}_{\text{learned}}
           + \underbrace{s\,\cos(c_u, t_i) / \tau}_{\text{content term}} + b_i,
    \qquad z_u = \frac{p_u + \mathrm{MLP}(p_u)}{\lVert p_u + \mathrm{MLP}(p_u) \rVert},
    \quad p_u = \sum_j \alpha_{uj} W e_j,

with :math:`\alpha_{uj}` the encoder's attention and :math:`c_u` the normalised sum of the
history's unit text vectors. Each history item :math:`j` gets

* its **attention** :math:`\alpha_{uj}`;
* its **contribution**, a first-order share of the score:
  :math:`\alpha_{uj}\,(W e_j)^\top e_i / (\lVert p_u + \mathrm{MLP}(p_u)\rVert\,\tau)`
  (exact up to the residual MLP) plus :math:`s\,t_j^\top t_i / (\lVert\sum_k t_k\rVert\,\tau)`,
  its exact share of the content term. Items are ranked by it;
* its **removal effect**: how much the score falls when the item is taken out of the
  history (the user re-encoded without it; exact, what the model would then say).

``simulations/bench_explain.py`` checks on held-out items that the contribution is faithful:
removing the top-ranked history item lowers the held-out item's score more than removing a
random one. The explanation covers the global model. Where the served recommendations blend it
with the shop's EASE (the hybrid), the blend weight is reported beside it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch


class ExplainError(KeyError):
    """An unknown user or item (the message says which, and how to find valid ones)."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class HistoryReason:
    item: str
    title: str
    category: str
    attention: float
    contribution: float
    removal_effect: float


@dataclass
class Explanation:
    shop: str
    user: str
    item: str
    title: str
    category: str
    round: int
    score: float
    learned: float
    content: float
    bias: float
    reasons: list[HistoryReason] = field(default_factory=list)
    interests: list[dict] = field(default_factory=list)
    hybrid_alpha: float | None = None
    #: The part of the content term that comes from the customer's own search queries.
    searches: float = 0.0

    @property
    def content_share(self) -> float:
        """The content term's share of the score's magnitude (|content| over |learned| + |content| + |bias|)."""
        total = abs(self.learned) + abs(self.content) + abs(self.bias)
        return abs(self.content) / total if total > 0 else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "content_share": self.content_share}


def _index(values, key: str, kind: str, shop: str) -> int:
    where = np.flatnonzero(np.asarray(values) == key)
    if len(where) == 0:
        hint = "`fedgraph graph RUN user SHOP USER` lists a user's items" if kind == "item" else "see `fedgraph graph RUN shops`"
        raise ExplainError(f"{kind} {key!r} is not in shop {shop!r}'s data ({hint})")
    return int(where[0])


@torch.no_grad()
def history_effects(served, u: int, i: int) -> tuple[dict, np.ndarray]:
    """The score parts of item ``i`` for user ``u`` and, per history item (most recent
    ``served.history``), ``[attention, contribution, removal_effect]`` rows (see module docs)."""
    from fedgraph.evaluation import item_embeddings
    from fedgraph.training.rows import RowSampler

    model, data = served.model, served.data
    if not hasattr(served, "_items"):
        served._items = item_embeddings(model, data)
    items = served._items
    batch = RowSampler(data, history=served.history, positives=1, negatives=1).encoding_batch(np.array([u]), served.history)
    mask = batch.history_mask[0]
    hist = batch.history[0][mask]
    n = len(hist)
    emb = items[hist].unsqueeze(0)  # [1, n, D]
    attr = batch.history_attr[0][mask].unsqueeze(0)
    ones = torch.ones(1, n, dtype=torch.bool)
    queries, query_mask = batch.queries, batch.query_mask  # the customer's own searches, if any
    user = model.user_embeddings_from(emb, attr, ones, queries, query_mask)
    target = items[i : i + 1]
    dim, cdim, tau = model.dim, model.content_dim, model.temperature
    learned = float(user[0, :dim] @ target[0, :dim] / tau)
    content = float(user[0, dim:] @ target[0, dim : dim + cdim] / tau) if cdim else 0.0
    bias = float(target[0, -1])
    score = float(model.score(user, target)[0, 0])
    alpha = model.attention_weights(emb, attr, ones)[0]
    messages = model.message(emb[0, :, :dim])
    pooled = (alpha.unsqueeze(-1) * messages).sum(0)
    pre = pooled + model.user_out(torch.nn.functional.gelu(pooled))
    contribution = alpha * (messages @ target[0, :dim]) / (torch.linalg.vector_norm(pre).clamp(min=1e-12) * tau)
    searched = 0.0
    if cdim:
        text = emb[0, :, dim : dim + cdim]  # unit text vectors
        scale = float(model.content_scale.weight.reshape(()))
        total = text.sum(0)
        unit_queries = None
        if queries is not None and queries.shape[1]:
            unit_queries = torch.nn.functional.normalize(queries[0][query_mask[0]], dim=-1)
            total = total + unit_queries.sum(0)
        norm = torch.linalg.vector_norm(total).clamp(min=1e-12) * tau
        contribution = contribution + scale * (text @ target[0, dim : dim + cdim]) / norm
        if unit_queries is not None:
            searched = float(scale * (unit_queries @ target[0, dim : dim + cdim]).sum() / norm)
    without = ~torch.eye(n, dtype=torch.bool) if n > 1 else torch.zeros(1, 1, dtype=torch.bool)
    others = model.user_embeddings_from(
        emb.expand(n, n, -1),
        attr.expand(n, n, -1),
        without,
        None if queries is None else queries.expand(n, -1, -1),
        None if query_mask is None else query_mask.expand(n, -1),
    )
    removal = score - model.score(others, target)[:, 0]
    rows = torch.stack([alpha, contribution, removal], dim=1).numpy()
    parts = {"score": score, "learned": learned, "content": content, "bias": bias, "history": hist.numpy(), "searches": searched}
    return parts, rows


def explain(served, user: str, item: str, *, top: int = 5, store=None, hybrid_alpha: float | None = None) -> Explanation:
    """Why ``item`` scores as it does for ``user`` in ``served`` (a
    :class:`~fedgraph.graph.serving.ServedShop`); the ``top`` history items by contribution.
    With ``store``, the user's interest edges of the categories on the path are added.

    Raises:
        ExplainError: the user or item is not in the shop's data.
    """
    data = served.data
    u = _index(data.users, str(user), "user", served.shop)
    i = _index(data.items, str(item), "item", served.shop)
    parts, rows = history_effects(served, u, i)
    order = np.argsort(-rows[:, 1], kind="stable")[:top] if len(rows) else []
    reasons = [
        HistoryReason(str(data.items[j]), str(data.item_titles[j]), str(data.item_categories[j]), float(r[0]), float(r[1]), float(r[2]))
        for j, r in ((parts["history"][k], rows[k]) for k in order)
    ]
    path = list(dict.fromkeys([str(data.item_categories[i]), *(r.category for r in reasons)]))
    interests = []
    if store is not None:
        weights = {x.interest: x.weight for x in store.user_interests(served.shop, str(user), k=100)}
        interests = [{"interest": c, "user_weight": weights.get(c)} for c in path]
    else:
        interests = [{"interest": c, "user_weight": None} for c in path]
    return Explanation(
        served.shop,
        str(user),
        str(item),
        str(data.item_titles[i]),
        str(data.item_categories[i]),
        served.round,
        parts["score"],
        parts["learned"],
        parts["content"],
        parts["bias"],
        reasons,
        interests,
        hybrid_alpha,
        parts["searches"],
    )


def render(e: Explanation) -> str:
    """The explanation in words."""
    lines = [
        f"why {e.item} ({e.title}) [{e.category}] for user {e.user} in shop {e.shop} (global model of round {e.round}):",
        f"  score {e.score:.3f} = learned {e.learned:.3f} + content term {e.content:.3f} ({e.content_share:.0%} of it) "
        f"+ item bias {e.bias:.3f}",
    ]
    if e.searches:
        lines.append(f"  of the content term, {e.searches:.3f} comes from the customer's own search queries")
    if e.hybrid_alpha is not None:
        lines.append(f"  served recommendations blend this score with the shop's own EASE (share of this model: {e.hybrid_alpha:.2f})")
    if e.reasons:
        lines.append("  history items that drove it (contribution to the score; attention; score change without the item):")
        for n, r in enumerate(e.reasons, start=1):
            lines.append(
                f"    {n}. {r.item:<10} {r.title:<40.40} [{r.category}] {r.contribution:+.3f}  "
                f"attention {r.attention:.2f}  removing it: {-r.removal_effect:+.3f}"
            )
    else:
        lines.append("  the user has no history: the score is the item's alone")
    on_path = ", ".join(
        f"{x['interest']}" + (f" (user's interest weight {x['user_weight']:.3f})" if x["user_weight"] is not None else "")
        for x in e.interests
    )
    lines.append(f"  interests on the path: {on_path}")
    return "\n".join(lines)

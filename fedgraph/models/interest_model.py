r"""The fedgraph interest model: a text item tower and an attentive ego-graph user encoder.

Every parameter of this model is *transferable* between shops: nothing in it is indexed by
a user or an item id. Items are represented only through public catalog features (text
embeddings of title and category, price), so the same weights mean the same thing in every
shop and can be averaged by federated learning.

**Item tower.** For an item :math:`i` with feature vector :math:`\mathbf{x}_i` (see
:mod:`fedgraph.features`),

.. math::
    \mathbf{e}_i = \mathrm{norm}\big(W_2\,\mathrm{GELU}(W_1 \mathbf{x}_i + b_1) + b_2\big).

**User encoder.** A user :math:`u` is the centre of a star graph (its *ego graph*) whose
leaves are the items :math:`\mathcal{N}(u)` it interacted with, each edge carrying
features :math:`\mathbf{a}_{ui}` (recency, log-quantity, event kind). One attentive
message-passing step in the style of GAT (Veličković et al., 2018, "Graph Attention
Networks", ICLR) gives

.. math::
    \alpha_{ui} = \operatorname{softmax}_{i \in \mathcal{N}(u)}
        \big(\mathbf{w}_a^\top \tanh(W_a [\mathbf{e}_i \,\|\, \mathbf{a}_{ui}])\big),
    \qquad
    \mathbf{h}_u = \sum_{i \in \mathcal{N}(u)} \alpha_{ui}\, W_m \mathbf{e}_i,
    \qquad
    \mathbf{z}_u = \mathrm{norm}\big(\mathbf{h}_u + W_o\,\mathrm{GELU}(\mathbf{h}_u)\big).

The softmax over each user's neighbourhood and the sum are PyTorch Geometric's
:func:`torch_geometric.utils.softmax` and :func:`torch_geometric.utils.scatter` over the
edges of the batch's ego graphs. The score of item :math:`i` for user :math:`u` is
:math:`s_{ui} = \mathbf{z}_u^\top \mathbf{e}_i / \tau`.

**Content term (option, ``content_dim > 0``).** With :math:`\mathbf{t}_i` the item's unit-norm
text embedding (the first ``content_dim`` public feature columns) and
:math:`\mathbf{c}_u = \mathrm{norm}(\sum_{i \in \mathcal{N}(u)} \mathbf{t}_i + \sum_{q \in \mathcal{Q}(u)} \mathbf{t}_q)`
the user's text profile (:math:`\mathcal{Q}(u)`: the user's own search queries, unit vectors of
the same text model; none if the shop logs no searches), the score gains :math:`s \cos(\mathbf{c}_u, \mathbf{t}_i) / \tau` with one learned,
shared scale :math:`s` that starts at 1: an untrained model is the training-free content
baseline (:func:`fedgraph.evaluation.content_scores`) plus a small random part. It is carried by
the embeddings (user :math:`[\mathbf{z}_u \| s\,\mathbf{c}_u]`, item
:math:`[\mathbf{e}_i \| \mathbf{t}_i \| b_i]`), so scoring stays one dot product.

**Privacy shape.** The model consumes a batch of users, one row per user holding *only that
user's* history, positives and negatives (padded), and every trainable module is called
once per forward on a batch-first tensor. A user's loss and gradient therefore depend on
that user's interactions plus public catalog data, and nothing else: this is what makes
per-user DP-SGD (Opacus) exact, with one user = one sample.

**Loss.** Sampled softmax with uniformly drawn in-shop negatives (Jean et al., 2015;
Covington et al., 2016): for each held-out positive :math:`p` of user :math:`u` and
negatives :math:`n_1..n_N`,
:math:`\ell_{up} = -\log \frac{\exp s_{up}}{\exp s_{up} + \sum_j \exp s_{un_j}}`, averaged
over the user's positives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter, softmax

if TYPE_CHECKING:
    from fedgraph.config import ModelConfig

#: State-dict prefix of the shop-private parameters.
LOCAL_PREFIX = "local."


def is_private_key(name: str) -> bool:
    """Whether a state-dict key or parameter name belongs to the shop-private part (never sent)."""
    return name.startswith(LOCAL_PREFIX)


#: Number of per-edge features: recency, log1p(weight), one-hot kind (view, cart, purchase).
EDGE_FEATURES = 5


def text_profile(text: Tensor, mask: Tensor, queries: Tensor | None = None, query_mask: Tensor | None = None) -> Tensor:
    r"""A user's text profile :math:`\mathbf{c}_u`: the normalised sum of the *unit* text vectors of
    the user's own history items, from ``text [B, H, T]`` (unit or not: each row is scaled by its
    inverse norm, so no normalised copy is made) where ``mask [B, H]`` is set -> ``[B, T]``; with
    ``queries [B, Q, T]`` (the user's own search queries, embedded by the same text model) where
    ``query_mask [B, Q]`` is set, their unit vectors join the sum, one each like an item."""
    weights = mask.to(text.dtype) / torch.linalg.vector_norm(text, dim=-1).clamp(min=1e-12)
    total = torch.einsum("bh,bht->bt", weights, text)
    if queries is not None and query_mask is not None and queries.shape[1]:
        query_weights = query_mask.to(queries.dtype) / torch.linalg.vector_norm(queries, dim=-1).clamp(min=1e-12)
        total = total + torch.einsum("bq,bqt->bt", query_weights, queries.to(total.dtype))
    return F.normalize(total, dim=-1)


@dataclass
class UserBatch:
    """A batch of users, one row each, all tensors batch-first.

    ``history``/``history_attr``/``history_mask`` describe each user's ego graph;
    ``positives``/``positive_mask`` are the items to predict; ``negatives`` are uniformly
    sampled catalog items, with ``negative_mask`` False where a draw hit the user's own items.
    Item indices refer to the rows of the shop's item feature table.
    """

    history: Tensor  # [B, H] long
    history_attr: Tensor  # [B, H, EDGE_FEATURES] float
    history_mask: Tensor  # [B, H] bool
    positives: Tensor  # [B, P] long
    positive_mask: Tensor  # [B, P] bool
    negatives: Tensor  # [B, N] long
    negative_mask: Tensor  # [B, N] bool
    #: The users' own search queries (embedded, ``[B, Q, text_dim]``) and which are set; None: none.
    queries: Tensor | None = None
    query_mask: Tensor | None = None

    def to(self, device: torch.device | str) -> UserBatch:
        return UserBatch(**{k: (None if v is None else v.to(device)) for k, v in self.__dict__.items()})

    def __len__(self) -> int:
        return int(self.history.shape[0])


class InterestModel(nn.Module):
    """Two-tower recommender with an attentive ego-graph user encoder (see module docs).

    Args:
        in_features: Size of an item's public feature vector.
        dim: Size of the user and item embeddings.
        hidden: Hidden width of the item tower.
        temperature: Softmax temperature :math:`\\tau` of the scores.
    """

    def __init__(
        self,
        in_features: int,
        dim: int = 64,
        hidden: int = 64,
        temperature: float = 0.1,
        num_local_items: int = 0,
        content_dim: int = 0,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.num_local_items = num_local_items
        self.dim = dim
        self.hidden = hidden
        self.temperature = temperature
        #: Leading feature columns (the item's text embedding) used by the content term; 0 = off.
        self.content_dim = min(int(content_dim), in_features)
        self.item_in = nn.Linear(in_features, hidden)
        self.item_out = nn.Linear(hidden, dim)
        self.attention_hidden = nn.Linear(dim + EDGE_FEATURES, dim)
        self.attention_score = nn.Linear(dim, 1, bias=False)
        self.message = nn.Linear(dim, dim, bias=False)
        self.user_out = nn.Linear(dim, dim)
        # Shop-private part: a correction vector and a bias per catalog item. Its state-dict
        # keys start with ``local.`` and are never sent to the server (see local_state_dict).
        self.local = nn.Embedding(num_local_items, dim + 1) if num_local_items else None
        # Content term: the scale s of s * cos(c_u, t_i) (a 1x1 linear map so that Opacus clips it
        # like any other layer); it starts at 1, i.e. at the training-free content baseline.
        self.content_scale = nn.Linear(1, 1, bias=False) if self.content_dim else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.reset_parameters()
        # Start the residual branch near zero so an untrained user is the attentive mean.
        nn.init.normal_(self.user_out.weight, std=1e-3)
        nn.init.zeros_(self.user_out.bias)
        if self.local is not None:
            nn.init.zeros_(self.local.weight)
        if self.content_scale is not None:
            nn.init.ones_(self.content_scale.weight)

    @property
    def item_embedding_size(self) -> int:
        """Columns of :meth:`item_embeddings`: ``dim`` (unit vector), ``content_dim`` (unit text vector, if the content term is on), bias."""
        return self.dim + self.content_dim + 1

    @property
    def user_embedding_size(self) -> int:
        """Columns of a user embedding: ``dim`` (unit vector), then ``content_dim`` (``s * c_u``)."""
        return self.dim + self.content_dim

    @classmethod
    def from_config(
        cls, config: ModelConfig, *, in_features: int, text_dim: int, num_local_items: int = 0, seed: int | None = None
    ) -> InterestModel:
        """The model a run's ``[model]`` settings describe, over item features of width
        ``in_features`` whose first ``text_dim`` columns are the text embedding (the content
        term's input, with ``content_score``); the shop-private item part for
        ``num_local_items`` items (with ``local_items``). With ``seed``, torch's generator is
        seeded first, so every process builds the same shared weights."""
        if seed is not None:
            torch.manual_seed(seed)
        return cls(
            int(in_features),
            dim=config.dim,
            hidden=config.hidden,
            temperature=config.temperature,
            num_local_items=num_local_items if config.local_items else 0,
            content_dim=text_dim if config.content_score else 0,
        )

    def shared_state_dict(self) -> dict[str, Tensor]:
        """The transferable parameters: what federated learning averages."""
        return {k: v for k, v in self.state_dict().items() if not is_private_key(k)}

    def shared_parameters(self) -> list[nn.Parameter]:
        """The parameters of :meth:`shared_state_dict` (FedProx's proximal term pulls these)."""
        return [p for name, p in self.named_parameters() if not is_private_key(name)]

    def local_state_dict(self) -> dict[str, Tensor]:
        """The shop-private parameters (item corrections and biases): never leave the shop."""
        return {k: v for k, v in self.state_dict().items() if is_private_key(k)}

    # ------------------------------------------------------------------ towers
    def item_embeddings(self, item_features: Tensor, items: Tensor | None = None) -> Tensor:
        """Embed items: ``[..., F] -> [..., item_embedding_size]``; the last column is the item's bias.

        The first ``dim`` columns are unit norm; with the content term the next ``content_dim``
        are the item's unit-norm text vector :math:`t_i` (public, not trained). ``items`` (same leading shape) are the item
        indices for the shop-private correction and bias; without them (or without a local
        part) the bias is 0.
        """
        emb, bias = self._learned_item_embeddings(item_features, items)
        parts = [emb]
        if self.content_dim:
            parts.append(self._text_vectors(item_features))
        return torch.cat([*parts, bias], dim=-1)

    def _learned_item_embeddings(self, item_features: Tensor, items: Tensor | None) -> tuple[Tensor, Tensor]:
        """The item tower's unit vectors ``[..., dim]`` and the items' biases ``[..., 1]``."""
        emb = self.item_out(F.gelu(self.item_in(item_features)))
        bias = emb.new_zeros(emb.shape[:-1] + (1,))
        if self.local is not None and items is not None:
            local = self.local(items)
            emb, bias = emb + local[..., :-1], local[..., -1:]
        return F.normalize(emb, dim=-1), bias

    def _text_vectors(self, item_features: Tensor) -> Tensor:
        """The items' unit text vectors :math:`t_i` (public, no parameters): ``[..., content_dim]``."""
        return F.normalize(item_features[..., : self.content_dim], dim=-1)

    def user_embeddings_from(
        self,
        history_emb: Tensor,
        history_attr: Tensor,
        history_mask: Tensor,
        queries: Tensor | None = None,
        query_mask: Tensor | None = None,
    ) -> Tensor:
        r"""Encode users from their embedded ego graphs: ``[B, H, item_embedding_size] -> [B, user_embedding_size]``.

        The first ``dim`` columns are unit norm; with the content term the rest are
        :math:`s\,c_u`, the user's text profile (normalised sum of the history's text vectors
        and of the user's embedded search ``queries [B, Q, text_dim]`` where ``query_mask``)
        times the learned scale. A user with an empty history gets the zero vector (it scores
        every item 0).
        """
        user = self._user_vector(history_emb[..., : self.dim], history_attr, history_mask)
        if self.content_scale is None:
            return user
        profile = text_profile(history_emb[..., self.dim : self.dim + self.content_dim], history_mask, queries, query_mask)
        return torch.cat([user, self.content_scale(profile.unsqueeze(-1)).squeeze(-1)], dim=-1)

    def _attention_logits(self, history_emb: Tensor, history_attr: Tensor) -> Tensor:
        """The encoder's attention logits ``[B, H, 1]`` over ``[B, H, dim]`` history item vectors."""
        return self.attention_score(torch.tanh(self.attention_hidden(torch.cat([history_emb, history_attr], dim=-1))))

    def attention_weights(self, history_emb: Tensor, history_attr: Tensor, history_mask: Tensor) -> Tensor:
        r"""The encoder's attention :math:`\alpha_{uj}` over each user's history: ``[B, H]``, each
        row summing to 1 over its unmasked items (0 at padding and for an empty history). Takes
        the embedded history as :meth:`user_embeddings_from` does."""
        logits = self._attention_logits(history_emb[..., : self.dim], history_attr).squeeze(-1)
        weights = torch.softmax(logits.masked_fill(~history_mask, float("-inf")), dim=-1)
        return torch.nan_to_num(weights, nan=0.0)

    def _user_vector(self, history_emb: Tensor, history_attr: Tensor, history_mask: Tensor) -> Tensor:
        """The attentive ego-graph encoder: ``[B, H, dim]`` item vectors -> unit :math:`z_u` ``[B, dim]``."""
        batch, hist = history_mask.shape
        logits = self._attention_logits(history_emb, history_attr)
        messages = self.message(history_emb)
        # Flatten the padded rows into the edge list of the batch's ego graphs.
        user_index = torch.arange(batch, device=history_mask.device).unsqueeze(1).expand(batch, hist)[history_mask]
        alpha = softmax(logits.squeeze(-1)[history_mask], user_index, num_nodes=batch)
        pooled = scatter(alpha.unsqueeze(-1) * messages[history_mask], user_index, dim=0, dim_size=batch, reduce="sum")
        return F.normalize(pooled + self.user_out(F.gelu(pooled)), dim=-1)

    # ------------------------------------------------------------------ training
    def forward(self, batch: UserBatch, item_features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r"""Return ``(user [B, user_embedding_size], positive_scores [B, P], negative_scores [B, N])``.

        The item tower runs once over the concatenation of history, positives and negatives
        (ghost clipping needs each trainable module called once per forward). The scores equal
        :meth:`score` of the serving embeddings, but the content term is computed apart: the
        cosine :math:`\cos(c_u, t_i)` has no parameters, so it is taken without autograd and only
        the scale :math:`s` (one call of ``content_scale`` on ``[B, P + N, 1]``) is differentiated;
        the wide text columns never enter the backward passes. The returned ``user`` carries
        :math:`s\,c_u` detached (it is for inspection; the loss uses the scores).
        """
        hist, pos = batch.history.shape[1], batch.positives.shape[1]
        all_items = torch.cat([batch.history, batch.positives, batch.negatives], dim=1)
        features = item_features[all_items]
        emb, bias = self._learned_item_embeddings(features, all_items)
        user = self._user_vector(emb[:, :hist], batch.history_attr, batch.history_mask)
        scores = torch.einsum("bd,btd->bt", user, emb[:, hist:]) / self.temperature + bias[:, hist:, 0]
        if self.content_scale is not None:
            with torch.no_grad():
                # The same cosines as the serving vectors give, from the raw text columns and their
                # norms, so no normalised copy of the batch's text block is made.
                text = features[..., : self.content_dim]
                profile = text_profile(text[:, :hist], batch.history_mask, batch.queries, batch.query_mask)
                items = text[:, hist:]
                cosine = torch.einsum("bt,bit->bi", profile, items) / torch.linalg.vector_norm(items, dim=-1).clamp(min=1e-12)
            scores = scores + self.content_scale(cosine.unsqueeze(-1)).squeeze(-1) / self.temperature
            user = torch.cat([user, self.content_scale.weight.detach() * profile], dim=-1)
        return user, scores[:, :pos], scores[:, pos:]

    def score(self, user: Tensor, item: Tensor) -> Tensor:
        """Scores (one dot product, :math:`z_u^T e_i / \\tau` plus the content term if on, plus :math:`b_i`)
        for ``user [B, user_embedding_size]`` and ``item [B, T, item_embedding_size]`` or ``[I, item_embedding_size]``."""
        if item.dim() == 2:
            return (user @ item[:, :-1].T) / self.temperature + item[:, -1]
        return torch.einsum("bd,btd->bt", user, item[..., :-1]) / self.temperature + item[..., -1]

    def recommendation_loss(self, batch: UserBatch, item_features: Tensor) -> Tensor:
        """Sampled-softmax loss, one value per user row: ``[B]``."""
        _, pos_scores, neg_scores = self(batch, item_features)
        neg_scores = neg_scores.masked_fill(~batch.negative_mask, float("-inf"))
        # For each positive p: -log(exp s_p / (exp s_p + sum_n exp s_n)).
        neg_lse = torch.logsumexp(neg_scores, dim=1, keepdim=True)  # [B, 1]
        per_pos = -pos_scores + torch.logaddexp(pos_scores, neg_lse.expand_as(pos_scores))
        per_pos = per_pos * batch.positive_mask
        return per_pos.sum(dim=1) / batch.positive_mask.sum(dim=1).clamp(min=1)

    # ------------------------------------------------------------------ serving
    @torch.no_grad()
    def recommend(self, user_emb: Tensor, item_emb: Tensor, k: int, exclude: Tensor | None = None) -> Tensor:
        """Top-``k`` item indices per user; ``exclude`` is a ``[U, I]`` bool mask of seen items."""
        scores = self.score(user_emb, item_emb)
        if exclude is not None:
            scores = scores.masked_fill(exclude, float("-inf"))
        return scores.topk(min(k, scores.shape[1]), dim=1).indices

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(in_features={self.in_features}, dim={self.dim}, hidden={self.hidden})"

r"""The hybrid recommender: the federated global model blended with a shop-private EASE.

The global :class:`~fedgraph.models.InterestModel` carries what transfers between shops (the
text item tower, the ego-graph user encoder, the content term); EASE
(:mod:`fedgraph.models.ease`), fitted in the shop on the shop's own log, carries what does not
(which of *this* shop's items are bought together). For a user :math:`u` of the shop,

.. math::
    s_{ui} = \alpha\, \operatorname{std}_u(s^{\mathrm{global}}_{u\cdot})_i
           + (1 - \alpha)\, \operatorname{std}_u(s^{\mathrm{EASE}}_{u\cdot})_i,
    \qquad \operatorname{std}_u(v) = \frac{v - \operatorname{mean}(v)}{\operatorname{sd}(v)},

each score vector standardised over the shop's catalog for that user, so the two scales
compare and :math:`\alpha \in [0, 1]` is the share of the global model. :math:`\alpha` is chosen
per shop on the shop's validation split (:func:`choose_alpha`); :math:`\alpha = 1` is the
global model alone.

**What leaves the shop.** Nothing of the private part: EASE's weights hold this shop's item
ids and are fitted, stored and used inside the shop; only the global model's shared weights
are ever sent (:meth:`~fedgraph.models.InterestModel.shared_state_dict`). Not trained under DP
(unless the ``ease_dp`` Gram matrix is used), so one customer's recommendations reflect the
other customers of the same shop, as any shop's own recommender does (see PRIVACY.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

#: The blend weights tried on validation (share of the global model).
ALPHAS: tuple[float, ...] = tuple(round(a, 2) for a in np.linspace(0.0, 1.0, 11))


def standardise(scores: torch.Tensor) -> torch.Tensor:
    """Each row minus its mean, over its standard deviation (rows with no spread become 0)."""
    scores = scores.float()
    if scores.numel() == 0:  # no users (a shop with none evaluable)
        return scores
    centred = scores - scores.mean(dim=1, keepdim=True)
    sd = centred.std(dim=1, keepdim=True)
    return torch.where(sd > 0, centred / sd.clamp_min(1e-12), torch.zeros_like(centred))


def blend(global_scores: torch.Tensor, private_scores: torch.Tensor, alpha: float) -> torch.Tensor:
    """The hybrid scores :math:`\\alpha\\,\\mathrm{std}(g) + (1-\\alpha)\\,\\mathrm{std}(p)` (see module docs).

    Raises:
        ValueError: the two score matrices differ in shape, or ``alpha`` is outside [0, 1].
    """
    if global_scores.shape != private_scores.shape:
        raise ValueError(f"blend: score shapes differ, {tuple(global_scores.shape)} vs {tuple(private_scores.shape)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"blend: alpha must be in [0, 1], got {alpha!r}")
    return alpha * standardise(global_scores) + (1.0 - alpha) * standardise(private_scores)


def choose_alpha(
    global_scores: torch.Tensor, private_scores: torch.Tensor, evaluate, alphas: Sequence[float] = ALPHAS
) -> tuple[float, dict[float, float]]:
    """The ``alpha`` whose blend maximises ``evaluate(scores) -> float`` (validation NDCG).

    Returns the chosen weight (ties towards the larger share of the global model) and the
    validation figure of every weight tried.
    """
    tried = {float(a): float(evaluate(blend(global_scores, private_scores, float(a)))) for a in alphas}
    best = max(tried.items(), key=lambda kv: (np.nan_to_num(kv[1], nan=-1.0), kv[0]))[0]
    return best, tried

"""Local training of the interest model on one shop's data (also used for baselines).

:func:`train_local` runs a fixed number of epochs over the shop's trainable users with Adam
(optionally with FedProx's proximal term towards the global weights). It is the single
training loop of the project: federated clients, the each-shop-alone baseline and the
pooled baseline all call it, so their budgets are comparable by construction.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import torch

from fedgraph.models.interest_model import InterestModel
from fedgraph.shop import ShopData
from fedgraph.training.rows import RowSampler
from fedgraph.training.settings import TrainResult, TrainSettings, resolve_device

if TYPE_CHECKING:
    from fedgraph.privacy import DPSettings

__all__ = ["TrainResult", "TrainSettings", "resolve_device", "train_local"]


def train_local(
    model: InterestModel,
    data: ShopData,
    settings: TrainSettings,
    *,
    device: torch.device | str = "cpu",
    negative_range: np.ndarray | None = None,
    dp: DPSettings | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data``; returns the mean loss over the last epoch.

    With ``dp``, training is user-level DP-SGD (Poisson sampling, per-user clipping, Gaussian
    noise; :mod:`fedgraph.training.dp`) for ``settings.epochs`` expected passes over the users.
    """
    device = torch.device(device)
    if dp is not None:
        from fedgraph.training.dp import train_dp

        return train_dp(model, data, settings, dp, device=device, negative_range=negative_range)
    started = time.perf_counter()
    model.to(device).train()
    features = torch.from_numpy(data.item_features).to(device)
    users = data.trainable_users()
    if len(users) == 0:
        return TrainResult.nothing_trained()
    sampler = RowSampler(
        data, history=settings.history, positives=settings.positives, negatives=settings.negatives, negative_range=negative_range
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    shared = model.shared_parameters()
    anchor = [p.detach().clone() for p in shared] if settings.proximal_mu > 0 else None
    rng = np.random.default_rng(settings.seed)
    steps, last_epoch_losses = 0, []
    for _ in range(settings.epochs):
        last_epoch_losses = []
        order = rng.permutation(users)
        for start in range(0, len(order), settings.batch_size):
            batch = sampler.training_batch(order[start : start + settings.batch_size], rng).to(device)
            loss = model.recommendation_loss(batch, features).mean()
            if anchor is not None:
                prox = sum(((p - a) ** 2).sum() for p, a in zip(shared, anchor))
                loss = loss + 0.5 * settings.proximal_mu * prox
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            last_epoch_losses.append(float(loss.detach()))
            steps += 1
    return TrainResult(loss=float(np.mean(last_epoch_losses)), users=int(len(users)), steps=steps, seconds=time.perf_counter() - started)

"""Local training of the interest model on one shop's data (also used for baselines).

:func:`train_local` runs a fixed number of epochs over the shop's trainable users with Adam
(optionally with FedProx's proximal term towards the global weights). It is the single
training loop of the project: federated clients, the each-shop-alone baseline and the
pooled baseline all call it, so their budgets are comparable by construction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from fedgraph.models.interest_model import InterestModel
from fedgraph.shop import ShopData
from fedgraph.training.rows import RowSampler

if TYPE_CHECKING:
    from fedgraph.privacy import DPSettings


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 1
    batch_size: int = 32
    lr: float = 5e-3
    weight_decay: float = 0.0
    history: int = 32
    positives: int = 4
    negatives: int = 64
    proximal_mu: float = 0.0
    seed: int = 0


@dataclass
class TrainResult:
    loss: float
    users: int
    steps: int
    seconds: float
    #: DP-SGD steps as Opacus' accountant recorded them: ``(noise_multiplier, sample_rate, steps)``; empty without DP.
    dp_history: list[tuple[float, float, int]] = field(default_factory=list)

    @property
    def as_metrics(self) -> dict[str, float]:
        return {"train_loss": self.loss, "num-examples": self.users, "steps": self.steps, "train_seconds": self.seconds}


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; anything else is passed to :class:`torch.device`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train_local(
    model: InterestModel,
    data: ShopData,
    settings: TrainSettings,
    *,
    device: torch.device | str = "cpu",
    negative_range: np.ndarray | None = None,
    dp: "DPSettings | None" = None,
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
        return TrainResult(loss=float("nan"), users=0, steps=0, seconds=0.0)
    sampler = RowSampler(
        data, history=settings.history, positives=settings.positives, negatives=settings.negatives, negative_range=negative_range
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    shared = [p for name, p in model.named_parameters() if not name.startswith("local.")]
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
    return TrainResult(
        loss=float(np.mean(last_epoch_losses)), users=int(len(users)), steps=steps, seconds=time.perf_counter() - started
    )

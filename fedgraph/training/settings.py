"""What every training loop of the project takes and returns, and where it runs.

:func:`fedgraph.training.local.train_local` (Adam) and :func:`fedgraph.training.dp.train_dp`
(user-level DP-SGD) share these types; both import them from here, so neither module imports
the other's internals. The defaults are the run configuration's (:class:`fedgraph.config.TrainConfig`):
one source for each.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from fedgraph.config import TrainConfig


@dataclass(frozen=True)
class TrainSettings:
    """One training call: ``epochs`` passes over the shop's trainable users in batches of
    ``batch_size`` users, each user encoded from up to ``history`` recent items, scored against
    ``positives`` of its items and ``negatives`` sampled ones; ``proximal_mu`` > 0 adds FedProx's
    term towards the starting (global) weights; ``seed`` fixes the non-private randomness."""

    epochs: int = 1
    batch_size: int = TrainConfig.batch_size
    lr: float = TrainConfig.lr
    weight_decay: float = TrainConfig.weight_decay
    history: int = TrainConfig.history
    positives: int = TrainConfig.positives
    negatives: int = TrainConfig.negatives
    proximal_mu: float = 0.0
    seed: int = TrainConfig.seed

    @classmethod
    def from_config(cls, train: TrainConfig, **chosen: object) -> TrainSettings:
        """The ``[train]`` settings of a run (fields of the same name), with ``chosen`` on top."""
        same = {f.name: getattr(train, f.name) for f in fields(cls) if hasattr(train, f.name)}
        return cls(**{**same, **chosen})  # type: ignore[arg-type]


@dataclass
class TrainResult:
    """The mean loss of the last epoch, the users trained on, optimiser steps and seconds."""

    loss: float
    users: int
    steps: int
    seconds: float
    #: DP-SGD steps as Opacus' accountant recorded them: ``(noise_multiplier, sample_rate, steps)``; empty without DP.
    dp_history: list[tuple[float, float, int]] = field(default_factory=list)

    @property
    def as_metrics(self) -> dict[str, float]:
        return {"train_loss": self.loss, "num-examples": self.users, "steps": self.steps, "train_seconds": self.seconds}

    @classmethod
    def nothing_trained(cls) -> TrainResult:
        """The result for a shop with no trainable user: no step taken."""
        return cls(loss=float("nan"), users=0, steps=0, seconds=0.0)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; anything else is passed to :class:`torch.device`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)

"""Audit models: the run's training, re-run inside the audit on chosen users, and per-user scores.

An attack needs users the model was *not* trained on, and a run trains on every user it has.
So the audit trains its own models of a shop, on a random subset of users, with exactly the
run's settings: the same initial weights, the same ``[train]`` settings and, for a private
run, the same DP-SGD step as the shop's ledger plan (noise multiplier σ, clipping norm C,
Poisson sample rate q, δ) for the same number of steps the ledger records. Keeping σ, q and the
step count fixed keeps the mechanism, and so the claimed (ε, δ), the same whatever the
subset's size.

The audit model is one shop training alone. In the run, the shop's DP release is averaged with
other shops' updates; for this shop's customers that is post-processing of their shop's
release together with data independent of them, so attacking the shop's own release is the
stronger (worst-case) attack and what the shop's ε is about.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from fedgraph.federation.run_dir import RunDir
from fedgraph.federation.shop_side import train_settings
from fedgraph.models.interest_model import InterestModel
from fedgraph.privacy import DPSettings, epsilon
from fedgraph.shop import ShopData
from fedgraph.training import TrainSettings, train_local
from fedgraph.training.dp import steps_per_epoch
from fedgraph.training.rows import RowSampler


@dataclass(frozen=True)
class Mechanism:
    """How a shop trained in the run: the settings the audit re-uses."""

    private: bool
    epochs: int  # passes over the users (DP: expected passes, round(1/q) steps each)
    noise_multiplier: float = 0.0
    max_grad_norm: float = 0.0
    sample_rate: float = 1.0
    delta: float = 1e-5
    accountant: str = "rdp"
    claimed_epsilon: float = math.inf  # the ledger's ε for this shop (inf without DP)
    source: str = "config"  # "ledger" or "config"

    def dp(self, seed: int) -> DPSettings | None:
        if not self.private:
            return None
        return DPSettings(
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            sample_rate=self.sample_rate,
            delta=self.delta,
            accountant=self.accountant,
            grad_sample_mode="ghost",
            noise_seed=seed,
        )

    def with_epochs(self, epochs: int | None) -> Mechanism:
        return self if not epochs else replace(self, epochs=int(epochs))

    def audited_epsilon(self) -> float:
        """ε of the mechanism the audit models run (equals the claim when no setting was scaled down)."""
        if not self.private:
            return math.inf
        steps = steps_per_epoch(self.sample_rate) * self.epochs
        return epsilon([(self.noise_multiplier, self.sample_rate, steps)], self.delta, self.accountant)


def mechanism_for(run: RunDir, shop: str, plan: dict | None, rounds: list[dict]) -> Mechanism:
    """The shop's mechanism from its verified ledger (``plan`` + ``round`` entries), else from the config."""
    cfg = run.config
    full_epochs = cfg.train.rounds * cfg.train.local_epochs
    if plan is None:
        if not cfg.privacy.enabled:
            return Mechanism(private=False, epochs=full_epochs)
        from fedgraph.privacy.budget import plan_for

        data = ShopData.load(run.shop_file(shop))
        p = plan_for(
            len(data.trainable_users()),
            cfg.privacy,
            rounds=cfg.train.rounds,
            local_epochs=cfg.train.local_epochs,
            batch_size=cfg.train.batch_size,
        )
        return Mechanism(
            private=True,
            epochs=full_epochs,
            noise_multiplier=p["noise_multiplier"],
            max_grad_norm=p["max_grad_norm"],
            sample_rate=p["sample_rate"],
            delta=p["delta"],
            accountant=p["accountant"],
            claimed_epsilon=p["planned_epsilon"],
        )
    steps = sum(int(e["steps"]) for e in rounds)
    per_epoch = steps_per_epoch(float(plan["sample_rate"]))
    claimed = float(rounds[-1]["epsilon"]) if rounds else 0.0
    return Mechanism(
        private=True,
        epochs=max(1, int(round(steps / per_epoch))) if steps else full_epochs,
        noise_multiplier=float(plan["noise_multiplier"]),
        max_grad_norm=float(plan["max_grad_norm"]),
        sample_rate=float(plan["sample_rate"]),
        delta=float(plan["delta"]),
        accountant=str(plan["accountant"]),
        claimed_epsilon=claimed,
        source="ledger",
    )


# ------------------------------------------------------------------------------ data edits
def select_users(data: ShopData, keep: np.ndarray) -> ShopData:
    """``data`` restricted to the users at indices ``keep`` (catalog unchanged)."""
    return data.select_users(keep)


def with_canaries(data: ShopData, canaries: list[np.ndarray], prefix: str = "canary") -> ShopData:
    """``data`` plus one extra user per entry of ``canaries`` (its item indices, oldest first).

    A canary's edges look like a purchase each, spread evenly over its own recency range.
    """
    if not canaries:
        return data
    items = [data.item] + list(canaries)
    attrs = [data.attr]
    for history in canaries:
        n = len(history)
        a = np.zeros((n, data.attr.shape[1]), dtype=np.float32)
        a[:, 0] = np.linspace(0.5, 1.0, n)
        a[:, 1] = np.log1p(1.0)
        a[:, 4] = 1.0  # purchase
        attrs.append(a)
    lengths = np.concatenate([np.diff(data.indptr), [len(c) for c in canaries]])
    names = np.concatenate([data.users, np.array([f"{prefix}-{i:05d}" for i in range(len(canaries))], dtype=data.users.dtype)])
    test_indptr = np.concatenate([data.test_indptr, np.full(len(canaries), data.test_indptr[-1])])
    return replace(
        data,
        users=names.astype(str),
        indptr=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        item=np.concatenate(items).astype(np.int64),
        attr=np.concatenate(attrs).astype(np.float32),
        test_indptr=test_indptr,
        query_indptr=np.concatenate([data.query_indptr, np.full(len(canaries), data.query_indptr[-1])]),  # a canary has no searches
    )


def make_canaries(data: ShopData, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``count`` canary histories: distinct catalog items drawn uniformly (a typical history's length).

    Random baskets are what no real customer buys together, so a model that memorises one shows it.
    """
    lengths = np.diff(data.indptr)[data.trainable_users()]
    size = int(min(max(np.median(lengths) if len(lengths) else 8, 4), 32, data.num_items))
    return [rng.choice(data.num_items, size=size, replace=False).astype(np.int64) for _ in range(count)]


# ------------------------------------------------------------------------------ training
def initial_model(run: RunDir, data: ShopData) -> InterestModel:
    """The run's initial weights with an untrained shop-private part (every audit model starts here)."""
    return run.new_model(data.num_items)


def train_audit_model(run: RunDir, data: ShopData, mechanism: Mechanism, seed: int) -> tuple[InterestModel, float]:
    """Train a fresh model on all trainable users of ``data`` as the run's shop would; returns (model, ε of this training)."""
    torch.manual_seed(seed)
    model = initial_model(run, data)
    settings: TrainSettings = train_settings(run, epochs=mechanism.epochs, seed=seed)
    result = train_local(model, data, settings, device="cpu", dp=mechanism.dp(seed))
    spent = epsilon(result.dp_history, mechanism.delta, mechanism.accountant) if mechanism.private else math.inf
    model.eval()
    return model, float(spent)


@torch.no_grad()
def user_losses(
    model: InterestModel,
    data: ShopData,
    users: np.ndarray,
    *,
    run: RunDir,
    draws: int = 4,
    seed: int = 0,
    negatives: int = 128,
    chunk: int = 256,
) -> np.ndarray:
    """Each user's training loss, averaged over ``draws`` rows that are the same for every model given ``seed``."""
    cfg = run.config.train
    sampler = RowSampler(data, history=cfg.history, positives=cfg.positives, negatives=negatives)
    features = torch.from_numpy(data.item_features)
    model.eval()
    out = np.zeros(len(users), dtype=np.float64)
    for d in range(draws):
        for c, start in enumerate(range(0, len(users), chunk)):
            part = users[start : start + chunk]
            batch = sampler.training_batch(part, np.random.default_rng([seed, d, c]))
            out[start : start + len(part)] += model.recommendation_loss(batch, features).double().numpy()
    return out / draws

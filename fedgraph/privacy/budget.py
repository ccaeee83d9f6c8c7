"""One shop's privacy budget across a run: plan the noise, refuse a round that would overspend.

The plan is fixed when the shop first trains and written as the first ledger entry: sample
rate ``q = min(1, batch_size / users)`` (users at that moment; kept as the shop grows), ``steps_per_round = local_epochs × round(1/q)``,
δ (configured, or ``min(1e-5, 0.1/users)``), and the noise multiplier σ that keeps
``rounds × steps_per_round`` steps within the target ε under the configured accountant.
Before every round the shop checks that the steps it is about to take keep its total ε
(over *all* steps recorded in the ledger, not just the planned ones) within the target; if
not, it does not train and says so. Changing the privacy settings of a ledger that already
exists is refused: the earlier releases were made under the old plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedgraph.privacy import DPSettings, PrivacyLedger, Spent, default_delta, noise_multiplier_for, spent
from fedgraph.privacy.accounting import BudgetError

if TYPE_CHECKING:
    from fedgraph.config import PrivacyConfig

#: Configured plan fields that must not change once a ledger exists. The sample rate and a derived
#: δ are fixed by the plan itself: they are computed once, from the users the shop had when it
#: first trained, and kept as it gains or loses customers (Poisson sampling at a fixed q is valid
#: for any number of users; the expected batch grows with the shop).
_FIXED = ("target_epsilon", "max_grad_norm", "accountant")


def _steps_per_epoch(q: float) -> int:
    return max(1, int(round(1.0 / q)))


@dataclass
class ShopBudget:
    """A shop's plan and ledger (see module docs)."""

    shop: str
    ledger: PrivacyLedger
    plan: dict[str, Any]

    @property
    def delta(self) -> float:
        return float(self.plan["delta"])

    @property
    def target_epsilon(self) -> float:
        return float(self.plan["target_epsilon"])

    def history(self) -> list[tuple[float, float, int]]:
        """Every DP step this shop has taken, as Opacus accountant history triples."""
        out: list[tuple[float, float, int]] = []
        for entry in self.ledger.rounds():
            out.extend((float(s), float(q), int(n)) for s, q, n in entry["history"])
        return out

    def spent(self) -> Spent:
        return spent(self.history(), self.delta, self.plan["accountant"])

    def projected(self) -> Spent:
        """ε after one more round of the planned steps."""
        step = (float(self.plan["noise_multiplier"]), float(self.plan["sample_rate"]), int(self.plan["steps_per_round"]))
        return spent(self.history() + [step], self.delta, self.plan["accountant"])

    def next_round_fits(self) -> bool:
        return self.projected().reported <= self.target_epsilon * (1 + 1e-9)

    def settings(self, noise_seed: int | None, grad_sample_mode: str = "ghost") -> DPSettings:
        return plan_settings(self.plan, noise_seed=noise_seed, grad_sample_mode=grad_sample_mode)

    def record_round(self, server_round: int, model_version: str, history: list[tuple[float, float, int]]) -> dict[str, Any]:
        entry_history = [[float(s), float(q), int(n)] for s, q, n in history]
        total = spent(self.history() + [tuple(h) for h in entry_history], self.delta, self.plan["accountant"])
        return self.ledger.append(
            "round",
            shop=self.shop,
            round=int(server_round),
            model_version=model_version,
            history=entry_history,
            steps=int(sum(n for _, _, n in history)),
            sample_rate=float(self.plan["sample_rate"]),
            noise_multiplier=float(self.plan["noise_multiplier"]),
            max_grad_norm=float(self.plan["max_grad_norm"]),
            delta=self.delta,
            accountant=self.plan["accountant"],
            target_epsilon=self.target_epsilon,
            **total.as_dict(),
        )

    def record_skip(self, server_round: int, model_version: str) -> dict[str, Any]:
        now, projected = self.spent(), self.projected()
        return self.ledger.append(
            "skip",
            shop=self.shop,
            round=int(server_round),
            model_version=model_version,
            reason=f"budget: one more round would spend ε={projected.reported:.3f} > target {self.target_epsilon:g}",
            delta=self.delta,
            accountant=self.plan["accountant"],
            target_epsilon=self.target_epsilon,
            **now.as_dict(),
        )


def open_budget(
    directory: str | Path, *, shop: str, users: int, config: PrivacyConfig, rounds: int, local_epochs: int, batch_size: int
) -> ShopBudget:
    """The shop's budget in ``directory``: verifies the ledger, writes the plan on first use."""
    ledger = PrivacyLedger(directory)
    entries = ledger.verify(repair=True)
    if entries:
        plan = entries[0]
        if plan.get("kind") != "plan":
            raise BudgetError(f"{ledger.path}: the first entry is not a plan; the ledger is not a fedgraph privacy ledger")
        wanted = plan_for(users, config, rounds=rounds, local_epochs=local_epochs, batch_size=batch_size, noise=False)
        changed = [f"{k}: ledger {plan.get(k)!r}, config {v!r}" for k, v in wanted.items() if k in _FIXED and plan.get(k) != v]
        if config.delta and float(config.delta) != float(plan["delta"]):
            changed.append(f"delta: ledger {plan['delta']!r}, config {config.delta!r}")
        if config.noise_multiplier and float(config.noise_multiplier) != float(plan["noise_multiplier"]):
            changed.append(f"noise_multiplier: ledger {plan['noise_multiplier']!r}, config {config.noise_multiplier!r}")
        if changed:
            raise BudgetError(
                f"shop {shop!r}: the privacy settings differ from those its ledger was started with ({'; '.join(changed)}). "
                "Earlier rounds were released under the old plan; start a new run directory to use new settings."
            )
        return ShopBudget(shop=shop, ledger=ledger, plan=plan)
    planned = plan_for(users, config, rounds=rounds, local_epochs=local_epochs, batch_size=batch_size)
    plan = ledger.append(
        "plan",
        shop=shop,
        users=int(users),
        **planned,
        privacy_unit="one customer's whole history in one shop",
        mechanism="Poisson-subsampled Gaussian (DP-SGD, Opacus)",
    )
    return ShopBudget(shop=shop, ledger=ledger, plan=plan)


def plan_settings(plan: dict[str, Any], *, noise_seed: int | None, grad_sample_mode: str = "ghost") -> DPSettings:
    """The DP-SGD step settings of a plan (:func:`plan_for`); ``noise_seed`` None: CSPRNG noise."""
    return DPSettings(
        noise_multiplier=float(plan["noise_multiplier"]),
        max_grad_norm=float(plan["max_grad_norm"]),
        sample_rate=float(plan["sample_rate"]),
        delta=float(plan["delta"]),
        accountant=plan["accountant"],
        grad_sample_mode=grad_sample_mode,
        noise_seed=noise_seed,
    )


def plan_for(users: int, config: PrivacyConfig, *, rounds: int, local_epochs: int, batch_size: int, noise: bool = True) -> dict[str, Any]:
    """The DP-SGD plan for a shop of ``users`` trainable users (see module docs)."""
    q = min(1.0, batch_size / max(1, users))
    delta = config.delta or default_delta(users)
    steps_per_round = local_epochs * _steps_per_epoch(q)
    plan: dict[str, Any] = {
        "target_epsilon": float(config.target_epsilon),
        "delta": float(delta),
        "max_grad_norm": float(config.max_grad_norm),
        "accountant": config.accountant,
        "sample_rate": float(q),
        "steps_per_round": int(steps_per_round),
        "planned_rounds": int(rounds),
        "planned_steps": int(rounds * steps_per_round),
    }
    if noise:
        steps = plan["planned_steps"]
        sigma = float(config.noise_multiplier) or noise_multiplier_for(config.target_epsilon, delta, q, steps, config.accountant)
        planned = spent([(sigma, q, steps)], delta, config.accountant)
        plan.update(noise_multiplier=sigma, planned_epsilon=planned.reported, planned_epsilon_by_accountant=dict(planned.by_accountant))
    return plan

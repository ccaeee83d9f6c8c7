"""Statistics of the audit: ROC curves, TPR at low FPR, the one-run ε lower bound, DP limits.

Everything here is a pure function of score arrays, so it is tested on its own.

**One-run ε lower bound** (Steinke, Nasr & Jagielski, 2023, "Privacy Auditing with One (1)
Training Run", Theorem 5.2 with abstentions). ``m`` canaries are each included with
probability 1/2; the auditor guesses "in" for the ``k_in`` highest-scoring canaries, "out" for
the ``k_out`` lowest and abstains on the rest, making ``r = k_in + k_out`` guesses of which
``v`` are right. If training is (ε, δ)-DP, then

.. math::
    \\Pr[W \\ge v] \\le \\beta + 2 m \\delta \\max_{1 \\le i \\le v} \\frac{\\Pr[B \\ge v - i] - \\beta}{i},
    \\qquad \\beta = \\Pr[B \\ge v], \\quad B \\sim \\mathrm{Binomial}(r, \\tfrac{e^\\varepsilon}{1 + e^\\varepsilon}).

The lower bound is the largest ε whose p-value is still below the significance level: a
claim of that ε (at that δ) is refuted at 95% confidence. We try a few guess sizes fixed in
advance and divide the significance by their number (Bonferroni), so the 95% holds for the
best of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats


# ---------------------------------------------------------------------------------------- ROC
@dataclass
class Roc:
    fpr: np.ndarray
    tpr: np.ndarray
    auc: float
    auc_low: float  # 95% interval (Hanley & McNeil, 1982)
    auc_high: float
    positives: int
    negatives: int

    def tpr_at(self, fpr: float) -> float:
        """Best TPR among thresholds whose FPR is at most ``fpr`` (0 when none)."""
        ok = self.fpr <= fpr + 1e-12
        return float(self.tpr[ok].max()) if ok.any() else 0.0

    def curve(self, points: int = 200) -> dict[str, list[float]]:
        """The ROC curve thinned to about ``points`` vertices (for plots and the JSON)."""
        idx = np.unique(np.linspace(0, len(self.fpr) - 1, min(points, len(self.fpr))).round().astype(int))
        return {"fpr": [float(x) for x in self.fpr[idx]], "tpr": [float(x) for x in self.tpr[idx]]}


def roc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> Roc:
    """ROC of the rule "member if score ≥ t" over all thresholds ``t`` (higher score = member)."""
    pos = np.asarray(member_scores, dtype=np.float64)
    neg = np.asarray(nonmember_scores, dtype=np.float64)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("ROC needs at least one member and one non-member score")
    scores = np.concatenate([pos, neg])
    labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    distinct = np.flatnonzero(np.diff(scores)) if len(scores) > 1 else np.array([], dtype=int)
    ends = np.concatenate([distinct, [len(scores) - 1]])
    tps = np.cumsum(labels)[ends]
    fps = (ends + 1) - tps
    tpr = np.concatenate([[0.0], tps / len(pos)])
    fpr = np.concatenate([[0.0], fps / len(neg)])
    auc = float(np.trapezoid(tpr, fpr))
    low, high = auc_interval(auc, len(pos), len(neg))
    return Roc(fpr=fpr, tpr=tpr, auc=auc, auc_low=low, auc_high=high, positives=len(pos), negatives=len(neg))


def auc_interval(auc: float, n_pos: int, n_neg: int, z: float = 1.959964) -> tuple[float, float]:
    """Normal-approximation 95% interval of an AUC (Hanley & McNeil's standard error)."""
    a = min(max(auc, 1e-6), 1 - 1e-6)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / max(1, n_pos * n_neg)
    se = math.sqrt(max(var, 0.0))
    return max(0.0, auc - z * se), min(1.0, auc + z * se)


# ------------------------------------------------------------------------------- DP limits
def dp_max_tpr(fpr: np.ndarray | float, epsilon: float, delta: float) -> np.ndarray:
    """The highest TPR any membership test can reach at ``fpr`` against an (ε, δ)-DP mechanism.

    (Kairouz, Oh & Viswanath, 2015): TPR ≤ min(1, e^ε·FPR + δ, 1 − e^{−ε}·(1 − δ − FPR)).
    """
    x = np.asarray(fpr, dtype=np.float64)
    if not math.isfinite(epsilon):
        return np.ones_like(x)
    e = math.exp(min(epsilon, 700.0))
    return np.clip(np.minimum.reduce([np.ones_like(x), e * x + delta, 1 - (1 - delta - x) / e]), 0.0, 1.0)


def dp_max_auc(epsilon: float, delta: float) -> float:
    """The largest ROC AUC an attack can have against an (ε, δ)-DP mechanism."""
    if not math.isfinite(epsilon):
        return 1.0
    x = np.linspace(0.0, 1.0, 20001)
    return float(np.trapezoid(dp_max_tpr(x, epsilon, delta), x))


# ------------------------------------------------------------------ one-run lower bound
def one_run_p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """p-value of ``v`` or more right out of ``r`` guesses on ``m`` canaries under (ε, δ)-DP (module docs)."""
    if r <= 0 or v <= 0:
        return 1.0
    p = 1.0 / (1.0 + math.exp(-epsilon))
    beta = float(stats.binom.sf(v - 1, r, p))
    if delta <= 0:
        return min(1.0, beta)
    i = np.arange(1, v + 1)
    tails = stats.binom.sf(v - i - 1, r, p) - beta
    alpha = float(np.max(tails / i))
    return min(1.0, beta + 2 * m * delta * alpha)


def epsilon_lower_bound(m: int, r: int, v: int, delta: float, significance: float = 0.05) -> float:
    """The largest ε refuted at ``significance`` by ``v`` right of ``r`` guesses (0 if none is)."""
    if r <= 0 or one_run_p_value(m, r, v, 0.0, delta) > significance:
        return 0.0
    hi = 1.0
    while one_run_p_value(m, r, v, hi, delta) <= significance:
        hi *= 2
        if hi > 200:
            return hi
    return float(optimize.brentq(lambda e: significance - one_run_p_value(m, r, v, e, delta), 0.0, hi, xtol=1e-6))


def guess_sizes(m: int) -> list[int]:
    """Guesses per side tried by the one-run audit, fixed before looking at the scores."""
    sizes = sorted({max(1, int(round(m * f))) for f in (0.05, 0.1, 0.2, 0.3, 0.5)})
    return [k for k in sizes if 2 * k <= m] or [max(1, m // 2)]


@dataclass
class OneRunAudit:
    epsilon_lower_bound: float
    guesses: int
    correct: int
    k_in: int
    k_out: int
    canaries: int
    included: int
    tried: list[dict]
    significance: float


def one_run_audit(scores: np.ndarray, included: np.ndarray, delta: float, significance: float = 0.05) -> OneRunAudit:
    """Guess each canary's membership from ``scores`` (higher = in) and bound ε (module docs)."""
    scores = np.asarray(scores, dtype=np.float64)
    included = np.asarray(included, dtype=bool)
    m = len(scores)
    order = np.argsort(-scores, kind="stable")
    sizes = guess_sizes(m)
    level = significance / len(sizes)
    tried, best = [], None
    for k in sizes:
        guessed_in, guessed_out = order[:k], order[m - k :]
        correct = int(included[guessed_in].sum() + (~included[guessed_out]).sum())
        eps = epsilon_lower_bound(m, 2 * k, correct, delta, level)
        tried.append({"k_in": k, "k_out": k, "guesses": 2 * k, "correct": correct, "epsilon_lower_bound": eps})
        if best is None or eps > best["epsilon_lower_bound"]:
            best = tried[-1]
    assert best is not None
    return OneRunAudit(
        epsilon_lower_bound=float(best["epsilon_lower_bound"]),
        guesses=best["guesses"],
        correct=best["correct"],
        k_in=best["k_in"],
        k_out=best["k_out"],
        canaries=m,
        included=int(included.sum()),
        tried=tried,
        significance=significance,
    )


def max_epsilon_lower_bound(m: int, delta: float, significance: float = 0.05) -> float:
    """The largest bound this many canaries can give (every guess right): the audit's resolution."""
    sizes = guess_sizes(m)
    return max(epsilon_lower_bound(m, 2 * k, 2 * k, delta, significance / len(sizes)) for k in sizes)

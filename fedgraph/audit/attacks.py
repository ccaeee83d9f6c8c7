"""The three attacks of the audit: membership inference, the one-run canary audit, update leakage.

Each function takes one shop and returns a plain dict of figures (what goes into the JSON).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy import stats as scipy_stats

from fedgraph.audit.stats import dp_max_auc, max_epsilon_lower_bound, one_run_audit, roc
from fedgraph.audit.training import (
    Mechanism,
    initial_model,
    make_canaries,
    select_users,
    train_audit_model,
    user_losses,
    with_canaries,
)
from fedgraph.federation.run_dir import RunDir
from fedgraph.federation.shop_side import train_settings
from fedgraph.shop import ShopData
from fedgraph.training.local import train_local

Say = Callable[[str], None]


def _roc_figures(members: np.ndarray, nonmembers: np.ndarray) -> dict[str, Any]:
    r = roc(members, nonmembers)
    return {
        "auc": r.auc,
        "auc_ci95": [r.auc_low, r.auc_high],
        "tpr_at_1pct_fpr": r.tpr_at(0.01),
        "tpr_at_0_1pct_fpr": r.tpr_at(0.001),
        "members": r.positives,
        "nonmembers": r.negatives,
        "fpr_resolution": 1.0 / r.negatives,
        "roc": r.curve(),
    }


# --------------------------------------------------------------------- membership inference
def membership_inference(run: RunDir, data: ShopData, mech: Mechanism, *, models: int, seed: int, say: Say) -> dict[str, Any]:
    """Loss-threshold and calibrated membership inference on ``models`` audit models of the shop.

    Model ``j`` trains on a random half of the shop's trainable users (its members; the other
    half are its non-members). Every model is attacked in turn (target), with the other models
    as references: the calibrated score of user ``u`` is its mean loss under the reference
    models that did *not* train on ``u`` minus its loss under the target (Watson et al., 2022,
    difficulty calibration; the offline form of Carlini et al., 2022, LiRA). Scores of all
    targets are pooled into one ROC.
    """
    rng = np.random.default_rng(seed)
    users = data.trainable_users()
    n = len(users)
    if n < 4:
        return {"skipped": f"only {n} trainable users; membership inference needs at least 4"}
    masks = np.zeros((models, n), dtype=bool)
    for j in range(models):
        while True:
            masks[j] = rng.random(n) < 0.5
            if 0 < masks[j].sum() < n:
                break
    losses = np.zeros((models, n))
    spent = []
    for j in range(models):
        model, eps = train_audit_model(run, select_users(data, users[masks[j]]), mech, seed=seed * 1000 + j)
        spent.append(eps)
        losses[j] = user_losses(model, data, users, run=run, seed=seed)
        say(f"  membership: model {j + 1}/{models} trained on {int(masks[j].sum())} of {n} users")
    init_loss = user_losses(initial_model(run, data), data, users, run=run, seed=seed)
    thr_in, thr_out, cal_in, cal_out = [], [], [], []
    for j in range(models):
        others = [k for k in range(models) if k != j]
        if others:
            out_of = ~masks[others]  # [K-1, n] references that did not train on u
            ref_all = losses[others].mean(axis=0)
            counts = out_of.sum(axis=0)
            ref = np.where(counts > 0, (losses[others] * out_of).sum(axis=0) / np.maximum(counts, 1), ref_all)
        else:
            ref = init_loss
        threshold = -losses[j]
        calibrated = ref - losses[j]
        thr_in.append(threshold[masks[j]]), thr_out.append(threshold[~masks[j]])
        cal_in.append(calibrated[masks[j]]), cal_out.append(calibrated[~masks[j]])
    loss_attack = _roc_figures(np.concatenate(thr_in), np.concatenate(thr_out))
    calibrated_attack = _roc_figures(np.concatenate(cal_in), np.concatenate(cal_out))
    eps = float(np.mean(spent))
    return {
        "method": (
            f"{models} audit models, each trained with the run's settings on a random half of the shop's {n} users "
            "(members) and not on the other half (non-members). Loss attack: a user is called a member when "
            "the target model's loss on the user's own rows is low. Calibrated attack: the same loss compared "
            "with the user's mean loss under the other audit models that did not train on the user "
            "(per-user difficulty calibration). Scores of every model as target are pooled."
        ),
        "users": n,
        "models": models,
        "audited_epsilon": eps,
        "dp_max_auc": dp_max_auc(eps, mech.delta) if mech.private else 1.0,
        "loss_threshold": loss_attack,
        "calibrated": calibrated_attack,
    }


# ------------------------------------------------------------------------ one-run canary audit
def canary_audit(run: RunDir, data: ShopData, mech: Mechanism, *, canaries: int, seed: int, say: Say) -> dict[str, Any]:
    """Steinke, Nasr & Jagielski (2023): one training run with ``canaries`` canary users, each in w.p. 1/2.

    The score of a canary is how much the training lowered its loss (initial-model loss minus
    trained-model loss): the initial weights are fixed by the run's seed and independent of
    the data, so this uses the one run only.
    """
    rng = np.random.default_rng(seed + 7)
    planted = make_canaries(data, canaries, rng)
    included = rng.random(canaries) < 0.5
    real = data.trainable_users()
    train_data = with_canaries(data, [c for c, inc in zip(planted, included) if inc])
    model, eps = train_audit_model(run, train_data, mech, seed=seed * 1000 + 999)
    scoring = with_canaries(data, planted)
    canary_rows = np.arange(data.num_users, data.num_users + canaries)
    trained = user_losses(model, scoring, canary_rows, run=run, seed=seed + 1)
    initial = user_losses(initial_model(run, data), scoring, canary_rows, run=run, seed=seed + 1)
    scores = initial - trained
    audit = one_run_audit(scores, included, mech.delta)
    say(f"  canaries: {canaries} planted, {int(included.sum())} trained on; {audit.correct}/{audit.guesses} guesses right")
    r = roc(scores[included], scores[~included]) if 0 < included.sum() < canaries else None
    return {
        "method": (
            f"{canaries} canary customers (random baskets of {len(planted[0])} catalog items) were planted and each "
            f"was included with probability 1/2 in one training run with the run's settings, next to the shop's "
            f"{len(real)} real users. The auditor guessed 'in' for the canaries whose loss dropped most in training "
            "and 'out' for those whose loss dropped least, abstaining on the rest; the count of right guesses "
            "gives a lower bound on ε at 95% confidence (Steinke, Nasr & Jagielski 2023, Thm 5.2; guess sizes "
            "fixed in advance, Bonferroni-corrected)."
        ),
        "canaries": canaries,
        "included": audit.included,
        "guesses": audit.guesses,
        "correct": audit.correct,
        "k_in": audit.k_in,
        "k_out": audit.k_out,
        "tried": audit.tried,
        "confidence": 1 - audit.significance,
        "delta": mech.delta,
        "epsilon_lower_bound": audit.epsilon_lower_bound,
        "audited_epsilon": eps,
        "claimed_epsilon": mech.claimed_epsilon if mech.private else None,
        "max_possible_lower_bound": max_epsilon_lower_bound(canaries, mech.delta),
        "canary_auc": r.auc if r else None,
        "scores_in": [float(s) for s in scores[included]],
        "scores_out": [float(s) for s in scores[~included]],
    }


# ---------------------------------------------------------------------------- update leakage
def shop_update(
    run: RunDir, data: ShopData, state: dict[str, torch.Tensor], mech: Mechanism, *, private: bool, seed: int
) -> dict[str, torch.Tensor]:
    """The update one round of the shop sends the server (new shared weights − old), with or without DP."""
    from fedgraph.federation.shop_side import model_for_shop

    model = model_for_shop(run, data, state)
    dp = mech.dp(seed) if private else None
    train_local(model, data, train_settings(run, epochs=run.config.train.local_epochs, seed=seed), device="cpu", dp=dp)
    new = model.shared_state_dict()
    return {k: new[k].detach().cpu() - state[k] for k in state}


def _flat(update: dict[str, torch.Tensor]) -> np.ndarray:
    return torch.cat([update[k].flatten() for k in sorted(update)]).double().numpy()


def purchase_profile(data: ShopData) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Share of customers who bought each item, and each category's share of purchases."""
    users = data.trainable_users()
    buyers = np.zeros(data.num_items)
    for u in users:
        buyers[np.unique(data.history(u))] += 1
    buyers /= max(1, len(users))
    cats = np.asarray(data.item_categories)
    names = sorted(set(cats.tolist()))
    share = np.array([buyers[cats == c].sum() for c in names])
    return buyers, share / max(share.sum(), 1e-12), names


def shadow_shop(data: ShopData, users: int, rng: np.random.Generator) -> ShopData:
    """A made-up shop with the real shop's public catalog and ``users`` synthetic customers.

    Category tastes are Dirichlet(0.5) over the catalog's categories and item popularity within a
    category Gamma(0.7) (both drawn fresh per shadow), histories of 4-20 items.
    """
    cats = np.asarray(data.item_categories)
    names = sorted(set(cats.tolist()))
    taste = dict(zip(names, rng.dirichlet(np.full(len(names), 0.5))))
    pop = rng.gamma(0.7, size=data.num_items) + 1e-9
    within = np.array([pop[i] / pop[cats == cats[i]].sum() for i in range(data.num_items)])
    p = np.array([taste[c] for c in cats]) * within
    p /= p.sum()
    hi = min(20, data.num_items)
    hists = [rng.choice(data.num_items, size=int(rng.integers(min(4, hi), hi + 1)), replace=False, p=p) for _ in range(users)]
    return with_canaries(select_users(data, np.zeros(0, dtype=np.int64)), hists, prefix="shadow")


class ShadowRegression:
    """Kernel ridge regression from a (standardised) update to the purchase profile, fit on shadow shops."""

    def __init__(self, updates: np.ndarray, items: np.ndarray, cats: np.ndarray) -> None:
        self.mean, self.scale = updates.mean(0), updates.std(0) + 1e-12
        x = (updates - self.mean) / self.scale
        gram = x @ x.T
        ridge = 1e-2 * np.trace(gram) / len(x) + 1e-12
        inv = np.linalg.inv(gram + ridge * np.eye(len(x)))
        self.x, self.items_mean, self.cats_mean = x, items.mean(0), cats.mean(0)
        self.a_items, self.a_cats = inv @ (items - self.items_mean), inv @ (cats - self.cats_mean)

    def predict(self, update: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = self.x @ ((update - self.mean) / self.scale)
        return self.items_mean + k @ self.a_items, self.cats_mean + k @ self.a_cats


def _precision_recall(guess: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    tp = float((guess & truth).sum())
    return (tp / guess.sum() if guess.sum() else 0.0), (tp / truth.sum() if truth.sum() else 0.0)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return 0.0
    rho = scipy_stats.spearmanr(a, b).statistic
    return float(rho) if rho == rho else 0.0


def leakage_figures(pred_items: np.ndarray, pred_cats: np.ndarray, data: ShopData) -> dict[str, Any]:
    """Compare the inferred purchase profile with the real one.

    Items: "popular" = bought by more customers than the average item; guessed popular where the
    inferred share is above the inferred average. Categories: over-represented = a larger share
    of purchases than of the catalog; guessed the same way from the inferred shares.
    """
    buyers, share, names = purchase_profile(data)
    truth = buyers > buyers.mean()
    guess = pred_items > pred_items.mean()
    precision, recall = _precision_recall(guess, truth)
    k = max(1, int(round(0.2 * data.num_items)))
    top_true = np.zeros(data.num_items, dtype=bool)
    top_true[np.argsort(-buyers, kind="stable")[:k]] = True
    top_guess = np.zeros(data.num_items, dtype=bool)
    top_guess[np.argsort(-pred_items, kind="stable")[:k]] = True
    auc = roc(pred_items[truth], pred_items[~truth]).auc if 0 < truth.sum() < data.num_items else None
    cats = np.asarray(data.item_categories)
    catalog_share = np.array([(cats == c).mean() for c in names])
    cat_truth, cat_guess = share > catalog_share, pred_cats > catalog_share
    cat_p, cat_r = _precision_recall(cat_guess, cat_truth)
    return {
        "items": int(data.num_items),
        "items_bought": int((buyers > 0).sum()),
        "items_popular": int(truth.sum()),
        "item_precision": precision,
        "item_recall": recall,
        "item_base_rate": float(truth.mean()),
        "item_auc": auc,
        "spearman_with_buyers": _spearman(pred_items, buyers),
        "bestseller_precision": float((top_guess & top_true).sum() / k),
        "bestseller_base_rate": k / data.num_items,
        "categories": len(names),
        "categories_overrepresented": int(cat_truth.sum()),
        "category_precision": cat_p,
        "category_recall": cat_r,
        "category_base_rate": float(cat_truth.mean()) if len(names) else 0.0,
        "category_spearman": _spearman(pred_cats, share),
    }


def update_leakage(
    run: RunDir, shops: list[ShopData], dp_mechs: dict[str, Mechanism], *, seed: int, say: Say, shadows: int = 24
) -> dict[str, Any]:
    """What the server learns about each shop's purchases from its update: without DP, with DP, under SecAgg+.

    A property-inference attack with shadow shops (Ganju et al., 2018; Melis et al., 2019): the
    server knows the global weights, the training code and each shop's public catalog and user
    count (FedAvg weights reveal it), so it trains ``shadows`` one-round updates on made-up
    customers with known purchases and fits a regression from update to purchase profile. It
    then applies the regression to the shop's real update. ``dp_mechs`` are the DP-SGD settings of
    the "with DP" view (the run's own for a private run).
    """
    rounds = run.checkpoint_rounds()
    base_round = rounds[-2] if len(rounds) >= 2 else 0
    state = run.load_checkpoint(base_round)["state_dict"] if base_round else run.new_model().state_dict()
    state = {k: v.detach().cpu() for k, v in state.items()}
    sizes = {d.shop: len(d.trainable_users()) for d in shops}
    total = sum(sizes.values())
    real: dict[str, dict[str, np.ndarray]] = {"no_dp": {}, "dp": {}}
    regressions: dict[str, ShadowRegression] = {}
    plain = Mechanism(private=False, epochs=1)
    for i, d in enumerate(shops):
        rng = np.random.default_rng([seed, i, 31])
        xs, items, cats = [], [], []
        for k in range(shadows):
            shadow = shadow_shop(d, sizes[d.shop], rng)
            xs.append(_flat(shop_update(run, shadow, state, plain, private=False, seed=seed + 1000 * i + k)))
            b, c, _ = purchase_profile(shadow)
            items.append(b), cats.append(c)
        regressions[d.shop] = ShadowRegression(np.array(xs), np.array(items), np.array(cats))
        for view, private in (("no_dp", False), ("dp", True)):
            real[view][d.shop] = _flat(shop_update(run, d, state, dp_mechs[d.shop], private=private, seed=seed + 17))
        say(f"  leakage: {d.shop}: {shadows} shadow updates, real updates with and without DP")

    per_shop: dict[str, dict[str, Any]] = {}
    for d in shops:
        reg = regressions[d.shop]
        dp_label = f"with DP (σ={dp_mechs[d.shop].noise_multiplier:.3g}, C={dp_mechs[d.shop].max_grad_norm:g})"
        views: dict[str, Any] = {}
        for view, label in (("no_dp", "one shop's update, no DP"), ("dp", f"one shop's update, {dp_label}")):
            views[view] = {"label": label, **leakage_figures(*reg.predict(real[view][d.shop]), d)}
        if len(shops) >= 2:
            weight = sizes[d.shop] / total
            for view, label in (("no_dp", "SecAgg+ sum of {n} shops, no DP"), ("dp", "SecAgg+ sum of {n} shops, " + dp_label)):
                summed = sum(real[view][s.shop] * (sizes[s.shop] / total) for s in shops)
                # The server only sees the weighted sum; it rescales it by the shop's weight.
                views[f"secagg_{view}"] = {"label": label.format(n=len(shops)), **leakage_figures(*reg.predict(summed / weight), d)}
        per_shop[d.shop] = views
    return {
        "method": (
            f"Starting from the global model of round {base_round} (the one sent out for the last round), each audited "
            "shop trains one round with the run's settings, once without DP and once with DP-SGD; the update is what "
            f"the server would see. The server, knowing the global model, the training code, the shop's public catalog "
            f"and its number of customers, trains {shadows} shadow updates on made-up customers with known purchases "
            "and fits a ridge regression from update to purchase profile (each item's share of buyers, each "
            "category's share of purchases; Ganju et al. 2018, Melis et al. 2019), then applies it to the real update. "
            "Items guessed popular = inferred share above the average item; categories guessed over-represented = "
            "inferred share above their share of the catalog. Under SecAgg+ the server sees only the size-weighted "
            "sum of the audited shops' updates."
        ),
        "base_round": base_round,
        "shadows": shadows,
        "shops": per_shop,
    }


def summarise_mia(result: dict[str, Any]) -> float:
    """The best AUC of the two membership attacks (nan when skipped)."""
    if "skipped" in result:
        return math.nan
    return max(result["loss_threshold"]["auc"], result["calibrated"]["auc"])

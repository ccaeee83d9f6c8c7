"""Model selection on validation, then one test evaluation of the chosen federated system.

A simulation holds each shop twice (:class:`~fedgraph.federation.run_dir.RunDir`): the
training view, whose held-out items are the **validation** split, and the test view (the whole
training period as history, the **test** items held out). Federated rounds are scored on
validation only. After training:

1. the **round** kept is the one with the best macro validation NDCG@k over shops (round 0,
   the untrained model, included); ties go to the earlier round;
2. per shop, the **hybrid** (:mod:`fedgraph.models.hybrid`) chooses on the shop's validation
   split, with the kept round's model: which counts its EASE is fitted on (its own log, or with
   federated EASE the federation's summed counts, :mod:`fedgraph.federation.item_counts`), EASE's
   λ, and the blend weight α;
3. both the kept global model alone (``federated``) and the hybrid (``hybrid``) are scored once
   on test, EASE refitted on the whole training period with the chosen λ.

In a simulation the validation figures come from every shop's private data without noise;
they steer choices only and are not part of the DP accounting (PRIVACY.md says so).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fedgraph.atomic import atomic_write_json
from fedgraph.baselines.methods import EASE_L2, shop_matrix
from fedgraph.evaluation import evaluate_scores, model_scores
from fedgraph.federation.run_dir import RunDir
from fedgraph.metrics import figure
from fedgraph.models.ease import EASE
from fedgraph.models.hybrid import blend, choose_alpha
from fedgraph.shop import ShopData

Say = Callable[[str], None]


def select_round(history: dict[str, Any], k: int) -> tuple[int, dict[int, float]]:
    """The round with the best macro validation NDCG@k (ties: the earlier), and every round's figure."""
    per_round = {}
    for r in history.get("rounds", []):
        values = [v for e in r.get("eval", {}).values() if (v := figure(e.get(f"ndcg@{k}"))) == v]
        if values:
            per_round[int(r["round"])] = float(np.mean(values))
    if not per_round:
        raise RuntimeError("no round has validation figures: the federated training did not evaluate; resume the run")
    best = max(per_round, key=lambda r: (per_round[r], -r))
    return best, per_round


def _ndcg(data: ShopData, users: np.ndarray, scores: torch.Tensor, k: int) -> float:
    value = float(evaluate_scores(data, users, scores, k=k)[f"ndcg@{k}"])
    return value if value == value else -1.0


class PrivateCandidates:
    """The scorers a shop's private part may use, per λ: ``own`` (EASE on the shop's own log)
    and, with federated EASE, ``federated`` (EASE on the federation's summed counts over the
    whole shared item space, :class:`~fedgraph.federation.item_counts.FederatedEASE`, fitted
    once per λ for every shop)."""

    def __init__(self, run: RunDir, view: str, private_part: str):
        self.run, self.view = run, view
        self.names = ["own"] + (["federated"] if private_part == "federated_ease" else [])
        self._federated: dict[float, Any] = {}
        self._counts = None

    def scores(self, name: str, l2: float, data: ShopData, users: np.ndarray) -> torch.Tensor:
        matrix = shop_matrix(data)
        rows = matrix[users]
        if name == "own":
            return EASE(l2).fit(matrix).scores(rows)
        from fedgraph.federation.item_counts import FederatedEASE, load_counts

        if l2 not in self._federated:
            if self._counts is None:
                self._counts = load_counts(self.run.path / "federated_counts.npz", self.view)
            self._federated[l2] = FederatedEASE(*self._counts, l2)
        return self._federated[l2].scores(data, rows)


def hybrid_choice(
    model,
    val: ShopData,
    candidates: PrivateCandidates,
    *,
    k: int,
    history: int,
    device: torch.device,
    known_l2: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The shop's hybrid, chosen on its validation split: for each candidate the λ that
    validates best for EASE alone (``known_l2[candidate]`` where that choice was already made
    on the same split, e.g. by the ``ease`` baseline), then the candidate and blend weight α whose
    blend validates best (ties: the own log, the larger α)."""
    users = val.evaluable_users()
    if len(users) == 0:
        return {"gram": "own", "l2": EASE_L2[0], "alpha": 1.0, "validation_ndcg": float("nan"), "global_validation_ndcg": float("nan")}
    global_scores = model_scores(model, val, users, history=history, device=device)
    tried: dict[str, tuple[float, dict[float, float]]] = {}
    chosen_l2: dict[str, float] = {}
    for name in candidates.names:
        best_l2, best_scores, best_value = None, None, -np.inf
        known = (known_l2 or {}).get(name)
        for l2 in EASE_L2 if known is None else (known,):
            scores = candidates.scores(name, l2, val, users)
            value = _ndcg(val, users, scores, k)
            if value > best_value:
                best_l2, best_scores, best_value = l2, scores, value
        chosen_l2[name] = best_l2
        alpha, by_alpha = choose_alpha(global_scores, best_scores, lambda scores: _ndcg(val, users, scores, k))
        tried[name] = (alpha, by_alpha)
    order = candidates.names
    name = max(order, key=lambda c: (tried[c][1][tried[c][0]], -order.index(c)))  # ties: the own log
    alpha = tried[name][0]
    return {
        "gram": name,
        "l2": chosen_l2[name],
        "alpha": alpha,
        "validation_ndcg": tried[name][1][alpha],
        "global_validation_ndcg": tried[order[0]][1][1.0],
        "ease_l2": chosen_l2,
    }


def select_and_test(run: RunDir, *, private_part: str, own_l2: dict[str, float] | None = None, say: Say = print) -> dict[str, Any]:
    """Choose the round (and, with a private part, each shop's hybrid) on validation and score the
    choice once on test; the result is kept in ``selection.json`` (reused on resume).

    ``own_l2``: per shop, the λ the ``ease`` baseline chose on the same validation split (the
    same choice the hybrid would make for its own-log candidate; passing it saves refitting).
    """
    from fedgraph.federation.shop_side import model_for_shop
    from fedgraph.training import resolve_device

    path = run.path / "selection.json"
    rounds = run.read_history()
    versions = [[int(r["round"]), r.get("model_version", "")] for r in rounds.get("rounds", [])]
    if path.exists():
        import json

        kept = json.loads(path.read_text())
        if kept.get("model_versions") == versions:  # the same rounds as when it was chosen
            say(f"selection: reused {path.name}")
            return kept
    cfg = run.config
    k, history = cfg.evaluation.k, cfg.evaluation.history
    device = resolve_device(cfg.train.device)
    best, per_round = select_round(rounds, k)
    say(
        f"selection: round {best} kept (macro validation NDCG@{k} {per_round[best]:.4f}; last round {max(per_round)}: {per_round[max(per_round)]:.4f})"
    )
    state = run.load_checkpoint(best)["state_dict"] if best > 0 else run.new_model().state_dict()
    federated, hybrid, choices = {}, {}, {}
    on_validation, on_test = PrivateCandidates(run, "train", private_part), PrivateCandidates(run, "final", private_part)
    for name in run.shop_names:
        val, final = ShopData.load(run.shop_file(name)), ShopData.load(run.final_shop_file(name))
        model = model_for_shop(run, val, state, server_round=best)
        users = final.evaluable_users()
        global_scores = model_scores(model, final, users, history=history, device=device)
        federated[name] = evaluate_scores(final, users, global_scores, k=k)
        if private_part in ("ease", "federated_ease"):
            known = {"own": own_l2[name]} if own_l2 and name in own_l2 else None
            choice = hybrid_choice(model, val, on_validation, k=k, history=history, device=device, known_l2=known)
            private = on_test.scores(choice["gram"], choice["l2"], final, users)
            hybrid[name] = {**evaluate_scores(final, users, blend(global_scores, private, choice["alpha"]), k=k), **choice}
            choices[name] = choice
    _prune_private_rounds(run, keep=(best, max(per_round) - 1, max(per_round)))
    doc = {
        "round": best,
        "model_versions": versions,
        "validation_ndcg": {str(r): v for r, v in per_round.items()},
        "private_part": private_part,
        "per_shop": choices,
        "federated": federated,
        "hybrid": hybrid,
    }
    atomic_write_json(path, doc)
    return doc


def _prune_private_rounds(run: RunDir, *, keep: tuple[int, ...]) -> None:
    """Delete the shops' per-round private parts except those of the rounds in ``keep`` (the kept
    round, the last one, from which a resumed run would go on, and the one before it, from which
    the last round can be replayed)."""
    for name in run.shop_names:
        folder = run.local_state_file(name, 0).parent
        if folder.is_dir():
            wanted = {run.local_state_file(name, r) for r in keep}
            for file in folder.glob("round-*.pt"):
                if file not in wanted:
                    file.unlink()

"""What left each shop besides its DP weights, read from what the server recorded.

The attacks of :mod:`fedgraph.audit.attacks` test the weights, the one release the privacy
ledger accounts. A shop's replies carry more: metrics beside the weights (counts, timings, loss,
ε and δ), evaluation figures on its held-out customers, error text. This module lists every
such channel the run's server history shows, per shop, and classifies it:

* ``accounted``: the DP weights (under ``privacy.enabled``);
* ``public``: values that do not depend on the shop's customers (its weight 1, the target ε,
  its ledger length, a budget refusal);
* ``outside the claim``: exact values computed from the shop's customers without noise. One
  customer more or less changes such a value deterministically, so an adversary who knows the
  rest of the shop's data decides that customer's membership with certainty: for that channel
  no finite ε holds, whatever the ledger says. ε and δ belong here: both are planned from the
  shop's customer count (``δ = min(1e-5, 0.1/n)``; σ and q from n), so they release it.

The test is the definition of the release, not a statistical attack: it cannot be "not
refutable"; it either happened (recorded) or did not.
"""

from __future__ import annotations

from typing import Any

#: Reply metrics that do not depend on the shop's customers.
PUBLIC = {"shop-weight", "partition-id", "target-epsilon", "ledger-seq", "budget-exhausted"}
#: Reply metrics derived from the customer count through the DP plan (and ``epsilon-<accountant>``).
SIZE_DERIVED = {"epsilon", "delta"}


def _size_derived(key: str) -> bool:
    return key in SIZE_DERIVED or key.startswith("epsilon-")


def _channel(name: str, message: str, keys: list[str], rounds: list[int], status: str, detail: str) -> dict[str, Any]:
    return {"channel": name, "message": message, "keys": sorted(keys), "rounds": len(rounds), "status": status, "detail": detail}


def released_channels(history: dict[str, Any], shops: list[str], private: bool) -> dict[str, list[dict[str, Any]]]:
    """Per shop, the channels its replies used in this run (see module docs).

    Args:
        history: the server's round history (``RunDir.read_history()``).
        shops: the shops to list.
        private: whether the run claims user-level DP (``privacy.enabled``).

    Returns:
        ``{shop: [{"channel", "message", "keys", "rounds", "status", "detail"}, ...]}``; ``status``
        is ``"accounted"``, ``"public"`` or ``"outside the claim"``.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for shop in shops:
        train: dict[str, list[int]] = {}
        evaluate: dict[str, list[int]] = {}
        trained: list[int] = []
        for r in history.get("rounds", []):
            n = int(r.get("round", 0))
            if shop in (r.get("train") or {}):
                trained.append(n)
            for part in ("train", "budget_exhausted"):
                for key in (r.get(part) or {}).get(shop, {}):
                    train.setdefault(key, []).append(n)
            for key in (r.get("eval") or {}).get(shop, {}):
                evaluate.setdefault(key, []).append(n)
        channels = []
        if trained:
            channels.append(
                _channel(
                    "weights",
                    "train reply",
                    [],
                    trained,
                    "accounted" if private else "outside the claim",
                    "the model update, DP-SGD in the shop" if private else "the model update, no DP",
                )
            )
        public = [k for k in train if k in PUBLIC]
        if public:
            channels.append(
                _channel(
                    "budget bookkeeping",
                    "train reply",
                    public,
                    sorted({n for k in public for n in train[k]}),
                    "public",
                    "weight 1, target ε, ledger length: the same for any set of customers",
                )
            )
        size = [k for k in train if _size_derived(k)]
        if size:
            channels.append(
                _channel(
                    "ε and δ",
                    "train reply",
                    size,
                    sorted({n for k in size for n in train[k]}),
                    "outside the claim",
                    "planned from the exact customer count, so they release it (privacy.report_epsilon = false keeps them in the shop)",
                )
            )
        data = [k for k in train if k not in PUBLIC and not _size_derived(k)]
        if data:
            channels.append(
                _channel(
                    "counts, timings, loss",
                    "train reply",
                    data,
                    sorted({n for k in data for n in train[k]}),
                    "outside the claim",
                    "exact figures computed from the shop's customers, no noise",
                )
            )
        if evaluate:
            channels.append(
                _channel(
                    "evaluation",
                    "evaluate reply",
                    list(evaluate),
                    sorted({n for v in evaluate.values() for n in v}),
                    "outside the claim",
                    "Recall/NDCG on held-out customers and their number, no noise "
                    "(privacy.share_evaluation = false keeps them in the shop)",
                )
            )
        out[shop] = channels
    return out

"""Run reports: ``metrics.json`` (stable schema), ``metrics.png`` and the terminal table.

``metrics.json`` layout (tools may rely on it)::

    {
      "k": 20,
      "methods": {
        "<method>": {                      # popularity, content, local, federated, pooled, lightgcn_pooled
          "recall@20": float,              # macro average over shops
          "ndcg@20": float,                # macro average over shops
          "weighted": {"recall@20": .., "ndcg@20": ..},   # weighted by evaluated users
          "macro_excluding_largest": {"recall@20": .., "ndcg@20": ..},
          "per_shop": {"<shop>": {"recall@20": .., "ndcg@20": .., "users": n}},
          "settings": {"<shop>": {"setting": .., "epochs": .., "l2": .., "alpha": ..}}   # chosen on validation, if any
        }
      },
      "rounds": [{"round": r, "recall@20": macro, "ndcg@20": macro, "seconds": s}],   # on VALIDATION
      "selection": {"round": kept round, "hybrid": {"<shop>": {"l2": λ, "alpha": α, ...}}},
      "shops": [...], "largest_shop": "...", "timings": {...}, "environment": {...}, "graphs": {...},
      "privacy": {"enabled": bool, "unit": str, "per_shop": {"<shop>": {"epsilon": .., "delta": .., ...}}, ...}
    }

Every ε in ``privacy`` is read from the shops' verified ledgers (:mod:`fedgraph.privacy.ledger`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fedgraph.atomic import atomic_write_json, atomic_write_with  # noqa: E402
from fedgraph.baselines import in_report_order  # noqa: E402
from fedgraph.console import plural  # noqa: E402
from fedgraph.federation.run_dir import RunDir  # noqa: E402
from fedgraph.metrics import aggregate_shops, figure  # noqa: E402
from fedgraph.privacy.accounting import epsilons_of  # noqa: E402

#: The federated system's own rows (fedgraph.selection): (order, label, colour) among the baselines'.
FEDERATED_ROWS = {"federated": (70, "federated global model", "#1f6fb4"), "hybrid": (75, "fedgraph hybrid (global + EASE)", "#17becf")}


def methods_in_order() -> list[tuple[str, str, str]]:
    """``(name, label, colour)`` of every method in report order: the registered baselines
    (:mod:`fedgraph.baselines`, read at call time) and the federated rows among them."""
    rows = [(b.order, b.name, b.label, b.colour) for b in in_report_order()]
    rows += [(order, name, label, colour) for name, (order, label, colour) in FEDERATED_ROWS.items()]
    return [(name, label, colour) for _, name, label, colour in sorted(rows)]


def _summarise(per_shop: dict[str, dict], k: int, largest: str) -> dict[str, Any]:
    keys = (f"recall@{k}", f"ndcg@{k}")
    clean = {s: {key: figure(m[key]) for key in keys} | {"users": int(m.get("users", 0))} for s, m in per_shop.items()}
    agg = aggregate_shops(clean)
    rest = {s: m for s, m in clean.items() if s != largest}
    agg_rest = aggregate_shops(rest) if rest else {"macro": {key: math.nan for key in keys}}
    out = {
        **{key: agg["macro"][key] for key in keys},
        "weighted": {key: agg["weighted"][key] for key in keys},
        "macro_excluding_largest": {key: agg_rest["macro"][key] for key in keys},
        "per_shop": clean,
    }
    # what was chosen on validation, per shop (λ, neighbours, epochs, blend weight ...)
    chosen = ("setting", "epochs", "l2", "alpha", "epsilon", "delta", "noise_multiplier")
    settings = {s: {c: m[c] for c in chosen if c in m} for s, m in per_shop.items()}
    if any(settings.values()):
        out["settings"] = settings
    return out


def write_report(
    run: RunDir,
    results: dict[str, dict[str, dict]],
    *,
    selection: dict[str, Any] | None = None,
    timings: dict[str, float],
    environment: dict[str, Any],
    graphs: dict[str, Any],
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    k = run.config.evaluation.k
    summary = run.index.get("summary", [])
    largest = max(summary, key=lambda s: s["users"])["shop"] if summary else ""
    methods = {m: _summarise(results[m], k, largest) for m, _, _ in methods_in_order() if m in results}
    rounds = []
    for r in run.read_history()["rounds"]:
        agg = aggregate_shops(
            {s: {f"recall@{k}": e[f"recall@{k}"], f"ndcg@{k}": e[f"ndcg@{k}"], "users": e.get("users", 0)} for s, e in r["eval"].items()}
        )
        rounds.append({"round": r["round"], **agg["macro"], "seconds": r.get("seconds", 0.0), "failures": len(r.get("failures", []))})
    doc = {
        "k": k,
        "methods": methods,
        "rounds": rounds,
        "shops": summary,
        "largest_shop": largest,
        "timings": timings,
        "environment": environment,
        "graphs": graphs,
        "privacy": privacy_summary(run),
        "config": run.config.to_dict(),
        "dataset": run.index.get("dataset", {}),
        "selection": {
            "split": "validation: each user's latest items of the training period; test figures computed once",
            "round": (selection or {}).get("round"),
            "hybrid": (selection or {}).get("per_shop", {}),
        },
    }
    atomic_write_json(run.metrics_file, doc)
    atomic_write_with(run.path / "metrics.png", lambda tmp: _plot(doc, tmp))
    for line in summary_table(doc).splitlines():
        say(line)
    say(f"wrote {run.metrics_file} and {run.path / 'metrics.png'}")
    return doc


def privacy_summary(run: RunDir) -> dict[str, Any]:
    """What privacy the run's releases carry, per shop, from the verified ledgers."""
    from fedgraph.privacy import PrivacyLedger

    p = run.config.privacy
    out: dict[str, Any] = {
        "enabled": p.enabled,
        "client_dp": p.client_dp,
        "secure_aggregation": p.secure_aggregation,
    }
    if p.client_dp != "off":
        entries = PrivacyLedger(run.server_privacy_dir).verify()
        rounds = [e for e in entries if e.get("kind") == "round"]
        out["client_level"] = {
            "unit": "one whole shop",
            "mechanism": entries[0]["mechanism"] if entries else p.client_dp,
            "epsilon": float(rounds[-1]["epsilon"]) if rounds else 0.0,
            "delta": float(p.client_delta),
            "noise_multiplier": float(p.client_noise_multiplier),
            "releases": len(rounds),
            "accountant": "rdp",
        }
    if not p.enabled:
        out["statement"] = "no differential privacy (privacy.enabled = false): the model carries no formal guarantee"
        return out
    per_shop = {}
    for shop in run.shop_names:
        entries = PrivacyLedger(run.privacy_dir(shop)).verify()
        plan = entries[0] if entries else {}
        trained = [e for e in entries if e.get("kind") == "round"]
        last = trained[-1] if trained else {}
        per_shop[shop] = {
            "epsilon": float(last.get("epsilon", 0.0)),
            "epsilon_by_accountant": epsilons_of(last) if last else {},
            "accountant": plan.get("accountant", p.accountant),
            "delta": float(plan.get("delta", 0.0)),
            "target_epsilon": float(plan.get("target_epsilon", p.target_epsilon)),
            "noise_multiplier": float(plan.get("noise_multiplier", 0.0)),
            "sample_rate": float(plan.get("sample_rate", 0.0)),
            "max_grad_norm": float(plan.get("max_grad_norm", p.max_grad_norm)),
            "steps": int(sum(e["steps"] for e in trained)),
            "rounds_trained": len(trained),
            "rounds_refused": sum(1 for e in entries if e.get("kind") == "skip"),
        }
    out.update(
        unit="one customer's whole history in one shop",
        mechanism="DP-SGD (Opacus): Poisson sampling of users, per-user clipping, Gaussian noise",
        accountant=p.accountant,
        per_shop=per_shop,
        max_epsilon=max((v["epsilon"] for v in per_shop.values()), default=0.0),
        max_delta=max((v["delta"] for v in per_shop.values()), default=0.0),
    )
    return out


def summary_table(doc: dict[str, Any]) -> str:
    """The terminal table: test figures of every method, then what the rows mean."""
    k = doc["k"]
    labels = {m: label for m, label, _ in methods_in_order()}
    width = max([24] + [len(labels.get(m, m)) for m in doc["methods"]])
    head = f"{'method (test split)':<{width}} {'Recall@' + str(k):>10} {'NDCG@' + str(k):>9} {'NDCG w.':>9} {'NDCG excl. ' + doc['largest_shop']:>18}"
    lines = [head, "-" * len(head)]
    for m, v in doc["methods"].items():
        lines.append(
            f"{labels.get(m, m):<{width}} {v[f'recall@{k}']:>10.4f} {v[f'ndcg@{k}']:>9.4f} {v['weighted'][f'ndcg@{k}']:>9.4f} "
            f"{v['macro_excluding_largest'][f'ndcg@{k}']:>18.4f}"
        )
    evaluated = [s for s in doc["shops"] if s.get("evaluable_users", 1)]
    users = sum(int(s.get("evaluable_users", 0)) for s in evaluated)
    lines.append(
        f"(macro averages over the {plural(len(evaluated), 'shop')} of {len(doc['shops'])} with evaluable users, "
        f"{users:,} users; 'w.' = weighted by evaluated users)"
    )
    if len(evaluated) < len(doc["shops"]):
        lines.append(
            f"warning: {plural(len(doc['shops']) - len(evaluated), 'shop')} without a user with held-out items: no figure "
            "(null in metrics.json); see data.min_user_items"
        )
    selection = doc.get("selection") or {}
    if selection.get("round") is not None:
        lines.append(
            f"chosen on validation: federated round {selection['round']}; the hybrid's λ and blend weight per shop "
            "(metrics.json: selection); every baseline's settings likewise (baselines/*.json)"
        )
    privacy = doc.get("privacy", {})
    if privacy.get("enabled"):
        lines.append(
            f"privacy: user-level DP-SGD per shop, ε ≤ {privacy['max_epsilon']:.2f} at δ ≤ {privacy['max_delta']:.1e} "
            f"({privacy['accountant'].upper()} accountant; unit: {privacy['unit']}) for the federated global model; "
            "'same model, shop alone' under the same DP plan; EASE-DP one Gram release at the same ε; "
            "'fedgraph hybrid' blends in a shop EASE that is NOT DP (it never leaves the shop); "
            "pooled rows and LightGCN are non-private references"
        )
    elif privacy:
        lines.append("privacy: none (privacy.enabled = false): no DP guarantee; enable with privacy.enabled=true privacy.target_epsilon=8")
    return "\n".join(lines)


def _plot(doc: dict[str, Any], path) -> None:
    """Validation NDCG per round (kept round marked), test NDCG per method, test NDCG per shop."""
    k = doc["k"]
    metric = f"ndcg@{k}"
    methods = doc["methods"]
    order = methods_in_order()
    labels = {m: label for m, label, _ in order}
    colours = {m: colour for m, _, colour in order}
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.2), gridspec_kw={"width_ratios": [1, 1, 1.6]})
    ax = axes[0]
    rounds = [r["round"] for r in doc["rounds"]]
    ax.plot(rounds, [r[metric] for r in doc["rounds"]], marker="o", color=colours["federated"], label="global model")
    kept = (doc.get("selection") or {}).get("round")
    if kept is not None:
        ax.axvline(kept, color="black", linestyle=":", label=f"kept: round {kept}")
    ax.set_xlabel("federated round")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
    ax.set_ylabel(f"{metric.upper()} (macro over shops)")
    ax.set_title(f"validation {metric.upper()} per round")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[1]
    shown = [m for m, _, _ in order if m in methods]
    ax.barh(range(len(shown)), [methods[m][metric] for m in shown], color=[colours[m] for m in shown])
    ax.set_yticks(range(len(shown)))
    ax.set_yticklabels([labels[m] for m in shown], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"test {metric.upper()} (macro over shops)")
    ax.set_title("test split, every method")
    ax.grid(axis="x", alpha=0.3)
    ax = axes[2]
    shops = [s["shop"] for s in doc["shops"]]
    width = 0.8 / max(len(shown), 1)
    for j, m in enumerate(shown):
        vals = [methods[m]["per_shop"].get(s, {}).get(metric, float("nan")) for s in shops]
        ax.bar([i + j * width for i in range(len(shops))], vals, width=width, color=colours[m], label=labels[m])
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(shops))])
    ax.set_xticklabels(
        [f"{s}\n({next(x['users'] for x in doc['shops'] if x['shop'] == s)})" for s in shops], rotation=45, fontsize=7, ha="right"
    )
    ax.set_ylabel(f"test {metric.upper()}")
    ax.set_title("per shop (users)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)

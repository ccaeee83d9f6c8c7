"""The audit report as one self-contained HTML file: inline CSS, plots as base64 PNG, no script.

It opens offline in any browser and prints to PDF cleanly (print CSS: A4, no broken figures
or tables, the status banner kept in colour).
"""

from __future__ import annotations

import base64
import io
import json
from html import escape
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from fedgraph.audit.stats import dp_max_tpr  # noqa: E402

CSS = """
:root { --ok:#1b7f3b; --bad:#b3261e; --warn:#9a6700; --ink:#1f2328; --muted:#57606a; --line:#d0d7de; }
* { box-sizing: border-box; }
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: var(--ink); margin: 0 auto; max-width: 1000px; padding: 24px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 19px; border-bottom: 1px solid var(--line); padding-bottom: 4px; margin-top: 32px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
.muted { color: var(--muted); }
.banner { border-radius: 6px; padding: 14px 18px; margin: 16px 0; color: #fff; font-size: 16px; }
.banner.TAMPERED, .banner.INCONSISTENT, .banner.NOT-PRIVATE { background: var(--bad); }
.banner.CONSISTENT { background: var(--ok); }
.banner.NO-PRIVACY-CLAIM, .banner.NOT-ATTACKED, .banner.NOT-REFUTABLE-AT-THIS-AUDIT-SIZE { background: var(--warn); }
.banner ul { margin: 8px 0 0 18px; padding: 0; font-size: 13px; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 12px; font-size: 13px; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: var(--ok); font-weight: 600; } .fail { color: var(--bad); font-weight: 600; } .warn { color: var(--warn); font-weight: 600; }
figure { margin: 10px 0; text-align: center; } figure img { max-width: 100%; height: auto; }
figcaption { font-size: 12px; color: var(--muted); }
code, .mono { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; word-break: break-all; }
details summary { cursor: pointer; color: var(--muted); }
@page { size: A4; margin: 14mm; }
@media print {
  body { max-width: none; padding: 0; font-size: 11px; }
  .banner, th { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  figure, table, .shop, .banner { break-inside: avoid; page-break-inside: avoid; }
  h2 { break-after: avoid; page-break-after: avoid; }
  details { display: block; } details > * { display: block; }
}
"""


def _png(fig: plt.Figure, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<figure><img alt="{escape(alt)}" src="data:image/png;base64,{data}"><figcaption>{escape(alt)}</figcaption></figure>'


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}".rstrip("0").rstrip(".") or "0"
    return escape(str(value))


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_fmt(c)}</td>' if isinstance(c, (int, float)) and not isinstance(c, bool) else f"<td>{_fmt(c)}</td>"
            for c in row
        )
        + "</tr>"
        for row in rows
    )
    thead = f"<thead><tr>{head}</tr></thead>" if any(header) else ""  # a key/value table has no header row
    return f"<table>{thead}<tbody>{body}</tbody></table>"


# ------------------------------------------------------------------------------ plots
def _epsilon_plot(promise: dict[str, Any]) -> str:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    drawn = False
    for shop, s in promise["shops"].items():
        per = s.get("per_round") or []
        if per:
            line = ax.plot([r["round"] for r in per], [r["epsilon"] for r in per], marker="o", label=f"{shop}")[0]
            rdp = [(r["round"], (r.get("epsilon_by_accountant") or {}).get("rdp")) for r in per]
            rdp = [(a, b) for a, b in rdp if b is not None]
            ax.plot([a for a, _ in rdp], [b for _, b in rdp], ls=":", color=line.get_color(), alpha=0.6)
            ax.axhline(s["target_epsilon"], ls="--", color=line.get_color(), lw=0.8)
            drawn = True
    ax.set_xlabel("round")
    ax.set_ylabel("ε spent (cumulative)")
    ax.set_title("ε per round per shop (solid: reported accountant; dotted: RDP; dashed: target)", fontsize=9)
    if not drawn:  # a run without DP: no chart, one sentence
        plt.close(fig)
        return "<p>No shop keeps a DP ledger: this run accounted no privacy budget, so there is no ε chart.</p>"
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7, ncol=3)
    return _png(fig, "Privacy budget spent per round, per shop, from the shops' ledgers")


def _roc_plot(shop: str, mia: dict[str, Any]) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
    for ax, log in zip(axes, (False, True)):
        for key, label in (("loss_threshold", "loss threshold"), ("calibrated", "calibrated")):
            r = mia[key]["roc"]
            fpr, tpr = np.array(r["fpr"]), np.array(r["tpr"])
            if log:
                fpr, tpr = np.clip(fpr, 1e-4, 1), np.clip(tpr, 1e-4, 1)
            ax.plot(fpr, tpr, label=f"{label} (AUC {mia[key]['auc']:.3f})")
        grid = np.logspace(-4, 0, 200) if log else np.linspace(0, 1, 200)
        ax.plot(grid, grid, color="grey", ls=":", lw=0.8, label="chance")
        eps = mia.get("audited_epsilon")
        if eps is not None and mia.get("dp_max_auc", 1.0) < 1.0:
            ax.plot(grid, np.clip(dp_max_tpr(grid, eps, 1e-5), 1e-4, 1), color="black", ls="--", lw=0.8, label=f"DP limit ε={eps:.2f}")
        if log:
            ax.set_xscale("log"), ax.set_yscale("log")
        ax.set_xlabel("false positive rate"), ax.set_ylabel("true positive rate")
        ax.set_title(("log-log" if log else "linear") + f" ROC, {shop}", fontsize=9)
        ax.legend(fontsize=7)
    return _png(fig, f"Membership inference ROC against {shop}'s audit models")


def _canary_plot(attacks: dict[str, Any], promise: dict[str, Any]) -> str:
    shops = [s for s in attacks if "canary" in attacks[s]]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    x = np.arange(len(shops))
    lbs = [attacks[s]["canary"]["epsilon_lower_bound"] for s in shops]
    claims = [attacks[s]["canary"].get("claimed_epsilon") for s in shops]
    axes[0].bar(x - 0.2, lbs, 0.4, label="empirical lower bound (95%)", color="#b3261e")
    axes[0].bar(x + 0.2, [c if c is not None else 0 for c in claims], 0.4, label="claimed ε (ledger)", color="#1b7f3b")
    for i, c in enumerate(claims):
        if c is None:
            axes[0].text(x[i] + 0.2, 0.05, "no claim", rotation=90, fontsize=7, ha="center", va="bottom")
    axes[0].set_xticks(x, shops, fontsize=7)
    axes[0].set_ylabel("ε")
    axes[0].set_title("one-run audit: lower bound vs claim", fontsize=9)
    axes[0].legend(fontsize=7)
    if shops:
        c = attacks[shops[0]]["canary"]
        axes[1].hist(
            [c["scores_in"], c["scores_out"]], bins=20, label=["included canaries", "excluded canaries"], color=["#b3261e", "#57606a"]
        )
        axes[1].set_xlabel("canary score (loss drop in training)")
        axes[1].set_title(f"canary scores, {shops[0]}", fontsize=9)
        axes[1].legend(fontsize=7)
    return _png(fig, "Canary audit: the ε the canaries prove, beside the ε the ledger claims")


def _leakage_plot(leakage: dict[str, Any]) -> str:
    shops = list(leakage.get("shops", {}))
    views = ["no_dp", "dp", "secagg_no_dp", "secagg_dp"]
    names = {"no_dp": "no DP", "dp": "DP", "secagg_no_dp": "SecAgg+", "secagg_dp": "SecAgg+ & DP"}
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    width = 0.8 / max(1, len(views))
    for ax, metric, title in (
        (axes[0], "item_auc", "popular-item ranking AUC (chance 0.5)"),
        (axes[1], "category_precision", "over-represented category precision"),
    ):
        for j, v in enumerate(views):
            vals = [(leakage["shops"][s].get(v) or {}).get(metric) for s in shops]
            ax.bar(np.arange(len(shops)) + (j - 1.5) * width, [x if x is not None else 0 for x in vals], width, label=names[v])
        if metric == "item_auc":
            ax.axhline(0.5, color="grey", ls=":", lw=0.8, label="chance")
        ax.set_xticks(np.arange(len(shops)), shops, fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=7)
    return _png(fig, "Update leakage: how well the server infers what each shop's customers bought")


# ------------------------------------------------------------------------------ sections
def _banner(doc: dict[str, Any]) -> str:
    status = doc["status"]
    words = {
        "TAMPERED": "TAMPERED RUN: the run's records were altered after the fact. This is not a clean report; do not sign it.",
        "INCONSISTENT": "INCONSISTENT: the attacks found more privacy loss than the run claims.",
        "CONSISTENT": "CONSISTENT: every finding is within the claimed privacy budget.",
        "NOT PRIVATE": "NOT PRIVATE: the DP noise was seeded from the run's configuration; whoever holds it can remove the noise.",
        "NOT REFUTABLE AT THIS AUDIT SIZE": "NOT REFUTABLE AT THIS AUDIT SIZE: no attack of this audit could have contradicted the claim.",
        "NO PRIVACY CLAIM": "NO PRIVACY CLAIM: the run was trained without differential privacy.",
        "NOT ATTACKED": "Records checked; attacks not run.",
    }[status]
    flags = "".join(f"<li>{escape(f)}</li>" for f in doc["flags"])
    return (
        f'<div class="banner {status.replace(" ", "-")}" id="status"><strong>{escape(words)}</strong>'
        + (f"<ul>{flags}</ul>" if flags else "")
        + "</div>"
    )


def _run_section(doc: dict[str, Any]) -> str:
    run = doc["run"]
    prov = run["provenance"]
    env = prov.get("run_environment", {})
    rows = [
        ["run directory", prov["run_dir"]],
        ["run by", prov["owner"]],
        ["host", prov["host"]],
        ["command", prov.get("command", "")],
        ["started (config written)", prov["started"]],
        ["finished (metrics written)", prov["finished"]],
        ["data source", run["data"]["dataset"].get("source", "—")],
        ["shops", ", ".join(run["shops"])],
        ["rounds", f"{run['rounds']} of {run['planned_rounds']} planned"],
        [
            "model",
            f"{run['model']['name']}: dim {run['model']['dim']}, hidden {run['model']['hidden']}, shop-private items {run['model']['local_items']}",
        ],
        ["run software", ", ".join(f"{k} {v}" for k, v in env.items() if k in ("python", "torch", "platform", "device")) or "—"],
        ["audit", f"by {prov['audit']['user']} on {prov['audit']['host']} at {prov['audit']['time']}"],
        ["audit software", ", ".join(f"{k} {v}" for k, v in prov["audit"]["software"].items())],
    ]
    shops = _table(
        ["shop", "users", "items", "interactions", "evaluable users"],
        [[s["shop"], s["users"], s["items"], s["interactions"], s.get("evaluable_users")] for s in run["data"]["summary"]],
    )
    hashes = _table(["file", "SHA-256"], [[k, v] for k, v in {**run["data"]["run_files"], **run["data"]["input_files"]}.items()])
    config = escape(json.dumps(run["config"], indent=1))
    return (
        "<h2>1. The run</h2>"
        + _table(["", ""], rows)
        + "<h3>Shops</h3>"
        + shops
        + "<h3>Data and file hashes</h3>"
        + hashes.replace("<td>", '<td class="mono">')
        + f'<details><summary>full configuration</summary><pre class="mono">{config}</pre></details>'
    )


def _integrity_section(doc: dict[str, Any]) -> str:
    integ = doc["integrity"]
    rows = [[f["severity"], f["check"], f["detail"]] for f in integ["findings"]] or [["ok", "all", "every record agrees with every other"]]
    return f"<h2>2. Integrity of the records: {escape(integ['status'])}</h2>" + _table(["severity", "check", "finding"], rows)


def privacy_table_rows(p: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The per-shop rows of the promise table: the reported ε and its accountant, then ε under
    every other accountant the audit knows (``p["accountants"]``, one column each, — where a
    shop's ledger has no figure for it), then the plan."""
    configured = p["configured"]["accountant"]
    others = [name for name in p.get("accountants", []) if name != configured]
    head = ["shop", "ledger", "ε (reported)", "accountant", *[f"ε ({name})" for name in others]]
    head += ["δ", "target ε", "σ", "q", "C", "steps", "rounds"]
    rows = []
    for shop, s in p["shops"].items():
        if s.get("ledger") != "verified":
            rows.append([shop, s.get("ledger")] + ["—"] * (len(head) - 2))
            continue
        by_name = s.get("epsilon_by_accountant") or {}
        rows.append(
            [shop, "verified", s["epsilon"], s["accountant"], *[by_name.get(name, "—") for name in others]]
            + [
                s.get("delta"),
                s.get("target_epsilon"),
                s.get("noise_multiplier"),
                s.get("sample_rate"),
                s.get("max_grad_norm"),
                s.get("steps"),
                f"{s.get('rounds_trained')} (+{s.get('rounds_refused')} refused)",
            ]
        )
    return head, rows


def _promise_section(doc: dict[str, Any]) -> str:
    p = doc["promise"]
    head, rows = privacy_table_rows(p)
    cd, sa = p["client_dp"], p["secure_aggregation"]
    settings = _table(
        ["setting", "value"],
        [
            ["differential privacy", "on (user-level DP-SGD in every shop)" if p["enabled"] else "off"],
            ["privacy unit", p["privacy_unit"]],
            [
                "client-level DP (server)",
                f"{cd['mode']}"
                + (f", σ={cd['noise_multiplier']}, clip {cd['clipping_norm']}, δ={cd['delta']}" if cd["mode"] != "off" else ""),
            ],
            [
                "secure aggregation (SecAgg+)",
                ("on" if sa["enabled"] else "off")
                + (f", {sa['num_shares']} shares, threshold {sa['reconstruction_threshold']}" if sa["enabled"] else ""),
            ],
            ["noise seeded from the config", p["configured"]["deterministic_noise"] if p["enabled"] else "—"],
        ],
    )
    notes = "".join(f"<li>{escape(n)}</li>" for n in p["notes"])
    return (
        "<h2>3. The promise</h2>"
        + settings
        + (_table(head, rows) if rows else "<p>No shop keeps a privacy ledger.</p>")
        + f"<ul>{notes}</ul>"
        + _epsilon_plot(p)
    )


def _attack_section(doc: dict[str, Any]) -> str:
    attacks = doc["attacks"]["shops"]
    if not attacks:
        return "<h2>4. Attacks</h2><p>The attacks were not run.</p>"
    parts = ["<h2>4. Attacks</h2>"]
    first = next(iter(attacks.values()))
    parts.append("<h3>4.1 Membership inference</h3><p>" + escape(first["membership"].get("method", "")) + "</p>")
    rows = []
    for shop, a in attacks.items():
        m = a["membership"]
        if "skipped" in m:
            rows.append([shop, m["skipped"]] + ["—"] * 6)
            continue
        for key, label in (("loss_threshold", "loss threshold"), ("calibrated", "calibrated")):
            f = m[key]
            rows.append(
                [
                    shop,
                    label,
                    f["auc"],
                    f"{f['auc_ci95'][0]:.3f}–{f['auc_ci95'][1]:.3f}",
                    f["tpr_at_1pct_fpr"],
                    f["tpr_at_0_1pct_fpr"],
                    f"{f['members']} / {f['nonmembers']}",
                    m.get("audited_epsilon"),
                ]
            )
    parts.append(
        _table(
            ["shop", "attack", "AUC", "95% interval", "TPR @ 1% FPR", "TPR @ 0.1% FPR", "members / non-members", "ε of audit models"], rows
        )
    )
    parts.append('<p class="muted">TPR at an FPR below 1/non-members is the TPR at zero false positives.</p>')
    for shop, a in attacks.items():
        if "skipped" not in a["membership"]:
            parts.append(f'<div class="shop">{_roc_plot(shop, a["membership"])}</div>')
    parts.append("<h3>4.2 One-run canary audit (Steinke, Nasr &amp; Jagielski, 2023)</h3><p>" + escape(first["canary"]["method"]) + "</p>")
    rows = [
        [
            s,
            a["canary"]["canaries"],
            a["canary"]["included"],
            f"{a['canary']['correct']} / {a['canary']['guesses']}",
            a["canary"]["epsilon_lower_bound"],
            a["canary"]["claimed_epsilon"],
            a["canary"]["audited_epsilon"],
            a["canary"]["max_possible_lower_bound"],
            a["canary"]["canary_auc"],
        ]
        for s, a in attacks.items()
    ]
    parts.append(
        _table(
            [
                "shop",
                "canaries",
                "included",
                "right / guesses",
                "ε lower bound (95%)",
                "claimed ε",
                "ε of audit run",
                "largest provable bound",
                "canary AUC",
            ],
            rows,
        )
    )
    parts.append(_canary_plot(attacks, doc["promise"]))
    leak = doc["attacks"]["leakage"]
    if leak:
        parts.append(leakage_section(leak))
    return "".join(parts)


def _against_chance(value: Any, chance: Any) -> str:
    return f"{_fmt(value)} (chance {_fmt(chance)})" if value is not None else "—"


def leakage_section(leak: dict[str, Any]) -> str:
    """Section 4.3: what the server could infer from each shop's update, one table about items
    and one about categories, each figure beside what guessing at random would score."""
    views = [(shop, v) for shop, per in leak["shops"].items() for v in per.values()]
    items = _table(
        [
            "shop",
            "what the server sees",
            "popular items guessed: precision",
            "popular items found: recall",
            "ranking AUC (0.5 = chance)",
            "top-20 % best-sellers guessed",
        ],
        [
            [
                shop,
                v["label"],
                _against_chance(v["item_precision"], v["item_base_rate"]),
                _fmt(v["item_recall"]),
                v["item_auc"],
                _against_chance(v["bestseller_precision"], v["bestseller_base_rate"]),
            ]
            for shop, v in views
        ],
    )
    categories = _table(
        [
            "shop",
            "what the server sees",
            "favourite categories guessed: precision",
            "favourite categories found: recall",
            "category rank correlation (0 = chance)",
        ],
        [
            [
                shop,
                v["label"],
                _against_chance(v["category_precision"], v["category_base_rate"]),
                _fmt(v["category_recall"]),
                v["category_spearman"],
            ]
            for shop, v in views
        ],
    )
    return (
        "<h3>4.3 Update leakage</h3><p>" + escape(leak["method"]) + "</p>"
        "<h4>Which items the shop's customers buy most</h4>"
        + items
        + "<h4>Which categories they favour</h4>"
        + categories
        + _leakage_plot(leak)
    )


def _verdict_section(doc: dict[str, Any]) -> str:
    parts = ["<h2>Verdict per shop</h2>"]
    for shop, v in doc["verdict"].items():
        cls = {"consistent": "pass", "inconsistent": "fail", "not auditable": "fail", "not private": "fail"}.get(v["status"], "warn")
        rows = [[c["check"], c["status"], c["detail"]] for c in v["checks"]]
        table = _table(["check", "result", "detail"], rows).replace("<td>pass</td>", '<td class="pass">pass</td>')
        table = table.replace("<td>fail</td>", '<td class="fail">fail</td>').replace("<td>warn</td>", '<td class="warn">warn</td>')
        parts.append(
            f'<div class="shop"><h3>{escape(shop)}: <span class="{cls}">{escape(v["status"])}</span></h3><p>{escape(v["summary"])}</p>'
            + (table if rows else "")
            + "</div>"
        )
    return "".join(parts)


def _channels_section(doc: dict[str, Any]) -> str:
    rows = [
        [shop, c["channel"], c["message"], ", ".join(c["keys"]) or "—", c["rounds"], c["status"], c["detail"]]
        for shop, found in doc.get("channels", {}).items()
        for c in found
    ]
    note = (
        "<p>Everything the server recorded from each shop besides the attacked weights. An exact figure on a shop's "
        'customers ("outside the claim") changes deterministically with one customer: no ε covers that channel.</p>'
    )
    return "<h2>What left each shop</h2>" + note + _table(["shop", "channel", "message", "keys", "rounds", "status", "detail"], rows)


def render_html(doc: dict[str, Any]) -> str:
    """The whole report (see module docs)."""
    title = f"Privacy audit: {doc['run']['provenance']['run_dir']}"
    body = (
        f'<h1>Privacy audit report</h1><p class="muted">{escape(doc["run"]["provenance"]["run_dir"])} · generated '
        f"{escape(doc['generated'])} · fedgraph audit, schema v{doc['schema_version']}</p>"
        + _banner(doc)
        + _verdict_section(doc)
        + _run_section(doc)
        + _integrity_section(doc)
        + _promise_section(doc)
        + _channels_section(doc)
        + _attack_section(doc)
        + '<p class="muted">Every figure in this report is also in audit.json next to it.</p>'
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">"
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{escape(title)}</title><style>{CSS}</style></head>'
        f"<body>{body}</body></html>\n"
    )

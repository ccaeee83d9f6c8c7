"""``fedgraph audit RUN_DIR``: what the run promised, and the attempts to break it.

:func:`run_audit` checks the run's records (:mod:`fedgraph.audit.integrity`), reads the
promise from the shops' privacy ledgers, runs the attacks (:mod:`fedgraph.audit.attacks`) on
the largest shops, reaches a verdict per shop, and writes ``audit.json`` (validated against
``report.schema.json``) and ``audit.html`` (self-contained; :mod:`fedgraph.audit.render`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedgraph.atomic import atomic_write_text
from fedgraph.audit.attacks import canary_audit, membership_inference, summarise_mia, update_leakage
from fedgraph.audit.channels import released_channels
from fedgraph.audit.integrity import check_run, data_sources, provenance
from fedgraph.audit.training import Mechanism, mechanism_for
from fedgraph.federation.run_dir import RunDir
from fedgraph.privacy.accountants import ACCOUNTANTS
from fedgraph.privacy.accounting import epsilons_of
from fedgraph.shop import ShopData

SCHEMA_FILE = Path(__file__).with_name("report.schema.json")
SCHEMA_VERSION = 1
Say = Callable[[str], None]

#: An attack AUC within this distance of 0.5 (or whose 95% interval holds 0.5) counts as "near chance".
NEAR_CHANCE = 0.1


@dataclass(frozen=True)
class AuditOptions:
    #: Audit models per shop for membership inference (each on a random half of the users).
    models: int = 4
    #: Canary users planted per shop for the one-run audit.
    canaries: int = 100
    #: Audit at most this many shops (largest first).
    max_shops: int = 3
    #: Training passes of each audit model (None = exactly the run's).
    epochs: int | None = None
    seed: int = 0
    #: Shadow shops per audited shop for the update-leakage attack.
    shadows: int = 24
    #: Run the attacks (False: integrity and promise only).
    attacks: bool = True


# ------------------------------------------------------------------------------ the promise
def _promise(run: RunDir, ledgers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    cfg = run.config
    p = cfg.privacy
    shops: dict[str, Any] = {}
    for shop, info in ledgers.items():
        entries = info.get("entries") or []
        plan = entries[0] if entries and entries[0].get("kind") == "plan" else None
        rounds = [e for e in entries if e.get("kind") == "round"]
        skips = [e for e in entries if e.get("kind") == "skip"]
        if plan is None:
            shops[shop] = {"ledger": _ledger_state(info)}
            continue
        last = rounds[-1] if rounds else {}
        shops[shop] = {
            "ledger": "verified",
            "users": plan.get("users"),
            "privacy_unit": plan.get("privacy_unit"),
            "mechanism": plan.get("mechanism"),
            "target_epsilon": plan.get("target_epsilon"),
            "epsilon": last.get("epsilon", 0.0),
            "delta": plan.get("delta"),
            "accountant": last.get("epsilon_accountant", plan.get("accountant")),
            "epsilon_by_accountant": epsilons_of(last) if last else {},
            "noise_multiplier": plan.get("noise_multiplier"),
            "sample_rate": plan.get("sample_rate"),
            "max_grad_norm": plan.get("max_grad_norm"),
            "steps": int(sum(int(e.get("steps", 0)) for e in rounds)),
            "rounds_trained": len(rounds),
            "rounds_refused": len(skips),
            "planned_epsilon": plan.get("planned_epsilon"),
            "per_round": [{"round": e["round"], "epsilon": e["epsilon"], "epsilon_by_accountant": epsilons_of(e)} for e in rounds],
        }
    notes = []
    if p.enabled and p.deterministic_noise:
        notes.append(
            "privacy.deterministic_noise = true: the DP noise and Poisson sampling are seeded from train.seed, which is "
            "in config.toml. Whoever holds the configuration can regenerate the noise, and the (ε, δ) guarantee "
            "assumes the noise is secret: the run is NOT PRIVATE against them. Use deterministic_noise = false "
            "(a CSPRNG; the deployment default) for a run whose ε is meant to protect anyone."
        )
    if not p.secure_aggregation:
        notes.append("Secure aggregation is off: the server sees every shop's model update on its own (see the update leakage attack).")
    if p.client_dp == "off":
        notes.append("Client-level DP is off: a shop's update is not clipped or noised at the server.")
    return {
        "enabled": p.enabled,
        "privacy_unit": next((s.get("privacy_unit") for s in shops.values() if s.get("privacy_unit")), None)
        or ("one customer's whole history in one shop" if p.enabled else "none: the run claims no differential privacy"),
        "configured": {
            "target_epsilon": p.target_epsilon,
            "delta": p.delta,
            "max_grad_norm": p.max_grad_norm,
            "accountant": p.accountant,
            "noise_multiplier": p.noise_multiplier,
            "deterministic_noise": p.deterministic_noise,
        },
        "accountants": sorted(ACCOUNTANTS),
        "client_dp": {
            "mode": p.client_dp,
            "noise_multiplier": p.client_noise_multiplier,
            "clipping_norm": p.client_clipping_norm,
            "delta": p.client_delta,
        },
        "secure_aggregation": {
            "enabled": p.secure_aggregation,
            "num_shares": p.secagg_num_shares,
            "reconstruction_threshold": p.secagg_reconstruction_threshold,
            "clipping_range": p.secagg_clipping_range,
            "quantization_range": p.secagg_quantization_range,
        },
        "shops": shops,
        "notes": notes,
    }


def _dp_mechanism_for_leakage(run: RunDir, shop: str, mech: Mechanism) -> Mechanism:
    """The run's own DP settings, or (for a run without DP) what its ``[privacy]`` target would have used."""
    if mech.private:
        return mech
    from fedgraph.privacy.budget import plan_for

    cfg = run.config
    users = len(ShopData.load(run.shop_file(shop)).trainable_users())
    p = plan_for(users, cfg.privacy, rounds=cfg.train.rounds, local_epochs=cfg.train.local_epochs, batch_size=cfg.train.batch_size)
    return Mechanism(
        private=True,
        epochs=mech.epochs,
        noise_multiplier=p["noise_multiplier"],
        max_grad_norm=p["max_grad_norm"],
        sample_rate=p["sample_rate"],
        delta=p["delta"],
        accountant=p["accountant"],
        claimed_epsilon=p["planned_epsilon"],
        source="config (not used by the run)",
    )


# ------------------------------------------------------------------------------ the verdict
def _near_chance(figures: dict[str, Any]) -> bool:
    low, high = figures["auc_ci95"]
    return abs(figures["auc"] - 0.5) <= NEAR_CHANCE or low <= 0.5 <= high


#: A membership attack can refute a claim only while the most AUC the claim allows is below this:
#: above it no audit of practical size separates the attack's confidence interval from it.
REFUTABLE_AUC = 0.999
#: Canary counts tried when saying how large a one-run audit would need to be.
CANARY_SIZES = (100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000)


def canaries_needed(claimed: float, delta: float) -> tuple[int | None, float]:
    """The fewest canaries (of :data:`CANARY_SIZES`) whose one-run audit could refute ``claimed``
    (None if none could), and the largest ε any of those sizes can prove."""
    from fedgraph.audit.stats import max_epsilon_lower_bound

    best = 0.0
    for m in CANARY_SIZES:
        bound = max_epsilon_lower_bound(m, delta)
        best = max(best, bound)
        if bound > claimed:
            return m, bound
    return None, best


def _refutable(claimed: float, mia: dict[str, Any], can: dict[str, Any]) -> tuple[bool, str]:
    """Whether this audit's attacks could have found the claim false at all, and why not."""
    by_canary = bool(can) and float(can.get("max_possible_lower_bound", 0.0)) > claimed
    by_membership = bool(mia) and "skipped" not in mia and float(mia.get("dp_max_auc", 1.0)) < REFUTABLE_AUC
    if by_canary or by_membership:
        return True, ""
    delta = float(can.get("delta") or mia.get("delta") or 1e-5)
    needed, most = canaries_needed(claimed, delta)
    size = (
        f"a one-run audit needs at least {needed:,} canaries to refute ε = {claimed:.2f}"
        if needed
        else f"no one-run canary audit at δ = {delta:g} can refute ε = {claimed:.2f} (the most any size up to "
        f"{CANARY_SIZES[-1]:,} canaries proves is ε ≈ {most:.2f})"
    )
    canaries = (
        f"{can.get('canaries')} canaries can prove at most ε ≈ {float(can['max_possible_lower_bound']):.2f}"
        if can
        else "no canary audit ran"
    )
    auc = (
        f"a membership attack would need AUC above {float(mia['dp_max_auc']):.4f}"
        if mia and "dp_max_auc" in mia
        else "no membership attack ran"
    )
    return False, f"{canaries} and {auc}; {size}"


def _verdict(shop: str, promise: dict[str, Any], attacks: dict[str, Any], tampered: bool, private: bool) -> dict[str, Any]:
    checks: list[dict[str, Any]] = []
    claimed = promise["shops"].get(shop, {}).get("epsilon")
    mia, can = attacks.get("membership", {}), attacks.get("canary", {})
    seeded = private and bool(promise.get("configured", {}).get("deterministic_noise"))

    def add(name: str, status: str, detail: str) -> None:
        checks.append({"check": name, "status": status, "detail": detail})

    if tampered:
        add("integrity", "fail", "the run's records were altered (see the top of the report); its privacy claim cannot be audited")
    if private and can:
        lb = can["epsilon_lower_bound"]
        ok = claimed is not None and lb <= float(claimed) + 1e-9 and lb <= can["audited_epsilon"] + 1e-9
        add(
            "canary lower bound",
            "pass" if ok else "fail",
            f"the canaries prove ε ≥ {lb:.2f} at 95% confidence; the ledger claims ε = {float(claimed or 0):.2f}"
            + ("" if ok else ": the measured privacy loss is LARGER than claimed"),
        )
    if private and mia and "skipped" not in mia:
        for name in ("loss_threshold", "calibrated"):
            fig = mia[name]
            label = "loss attack" if name == "loss_threshold" else "calibrated attack"
            if fig["auc_ci95"][0] > mia["dp_max_auc"] + 1e-9:
                add(
                    f"membership ({label})",
                    "fail",
                    f"AUC {fig['auc']:.3f} (95% interval from {fig['auc_ci95'][0]:.3f}) exceeds {mia['dp_max_auc']:.3f}, the most any "
                    f"attack can reach against ε = {mia['audited_epsilon']:.2f}",
                )
            elif _near_chance(fig):
                add(f"membership ({label})", "pass", f"AUC {fig['auc']:.3f}: near chance (0.5), as DP intends")
            else:
                add(
                    f"membership ({label})",
                    "warn",
                    f"AUC {fig['auc']:.3f} is measurably above chance; still within what ε = {mia['audited_epsilon']:.2f} "
                    f"allows (at most {mia['dp_max_auc']:.3f}), but customers' membership is partly inferable",
                )
    # The attacks audit one training run of the run's settings: its ε (≤ the ledger's) is what they could refute.
    attacked = float(can.get("audited_epsilon") or mia.get("audited_epsilon") or claimed or 0.0)
    refutable, why = _refutable(attacked, mia, can) if private and (mia or can) else (True, "")
    if private and not refutable:
        add("audit size", "warn", f"the attacks could not have refuted the claim: {why}")
    if tampered:
        status, words = "not auditable", "The run's records were altered after the fact; no privacy claim can be certified."
    elif seeded:
        status = "not private"
        words = (
            "The DP noise and Poisson sampling were seeded from train.seed (privacy.deterministic_noise = true), which is "
            "in the run's configuration: whoever holds it can regenerate the noise and remove it, so the ledger's "
            f"ε = {float(claimed or 0):.2f} protects no one against them. Rerun with privacy.deterministic_noise = false."
        )
    elif not private:
        best = summarise_mia(mia) if mia else math.nan
        lb = can.get("epsilon_lower_bound") if can else None
        status = "no privacy claim"
        words = (
            "The run made no differential-privacy claim. "
            + (f"Membership inference reaches AUC {best:.2f}" if best == best else "")
            + (f"; the canaries alone prove ε ≥ {lb:.2f}." if lb is not None else ".")
        )
    elif any(c["status"] == "fail" for c in checks):
        status, words = (
            "inconsistent",
            "The empirical findings contradict the claimed privacy budget: "
            + "; ".join(c["detail"] for c in checks if c["status"] == "fail"),
        )
    elif not refutable:
        status = "not refutable at this audit size"
        words = f"No attack of this audit could have contradicted the claim ε = {float(claimed or 0):.2f}: {why}."
    else:
        status = "consistent"
        words = f"The findings are consistent with the claim ε = {float(claimed or 0):.2f}: no attack exceeded what the claim allows" + (
            ", though some attacks do better than chance (see warnings)."
            if any(c["status"] == "warn" for c in checks)
            else ", and membership attacks are near chance."
        )
    return {"status": status, "summary": words, "checks": checks}


# ------------------------------------------------------------------------------ json helpers
def _clean(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def validate(doc: dict[str, Any]) -> None:
    """Raise :class:`jsonschema.ValidationError` unless ``doc`` follows ``report.schema.json``."""
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator(schema).validate(doc)


# ------------------------------------------------------------------------------ the audit
def _use_recorded_config(run: RunDir, integrity: dict[str, Any]) -> None:
    """When config.toml was edited (or broken) after the run, attack with the configuration the run recorded."""
    from fedgraph.config import RunConfig

    if not any(f["check"] == "config" and f["severity"] == "tampered" for f in integrity["findings"]):
        return
    try:
        recorded = json.loads(run.metrics_file.read_text())["config"]
        run.__dict__["config"] = RunConfig.from_dict(recorded, source=str(run.metrics_file))
    except (OSError, ValueError, KeyError, TypeError):
        pass


def _ledger_state(info: dict[str, Any]) -> str:
    """How the report names a shop's ledger that holds no plan."""
    if info.get("verified"):
        return "verified, empty"
    if info.get("not_in_rounds"):
        return "no ledger (not in the federated rounds: no customer to train on)"
    if info.get("error") is None:
        return "no ledger (this shop did not train with DP)"
    return f"NOT VERIFIED: {info['error']}"


def run_audit(
    run_dir: str | Path, out_dir: str | Path | None = None, options: AuditOptions = AuditOptions(), say: Say = print
) -> dict[str, Any]:
    """Audit the run in ``run_dir``; writes ``audit.json`` and ``audit.html`` to ``out_dir`` (default ``RUN_DIR/audit``)."""
    from fedgraph.audit.render import render_html

    started = time.perf_counter()
    run = RunDir.at(run_dir)
    if not run.config_file.exists():
        raise FileNotFoundError(f"{run.path} is not a fedgraph run directory (no config.toml)")
    out = Path(out_dir) if out_dir else run.path / "audit"
    if not options.attacks and (out / "audit.json").exists():
        try:
            earlier = json.loads((out / "audit.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            earlier = {}
        if (earlier.get("attacks") or {}).get("shops"):
            raise FileExistsError(
                f"{out} already holds an audit with attacks (status {earlier.get('status', '?')}); a records-only audit "
                f"(--no-attacks) would replace it: give --out DIR for the new report, or move {out / 'audit.json'} away first"
            )
    say(f"audit of {run.path}")
    integrity = check_run(run)
    tampered = integrity["status"] == "tampered"
    _use_recorded_config(run, integrity)
    for finding in integrity["findings"]:
        say(f"  {finding['severity'].upper()}: {finding['detail']}")
    cfg = run.config
    private = cfg.privacy.enabled
    promise = _promise(run, integrity["ledgers"])
    history = run.read_history()
    index = run.index
    sizes = {row["shop"]: row["users"] for row in index.get("summary", [])}
    # the attacks need an update: only shops in the federated rounds sent one
    audited = sorted(run.round_shops, key=lambda s: (-sizes.get(s, 0), s))[: max(1, options.max_shops)]
    attacks: dict[str, dict[str, Any]] = {}
    verdicts: dict[str, dict[str, Any]] = {}
    leakage: dict[str, Any] = {}
    if options.attacks and run.checkpoint_rounds():
        mechs, shops = {}, []
        for i, shop in enumerate(audited):
            info = integrity["ledgers"].get(shop, {})
            entries = info.get("entries") or []
            plan = entries[0] if info.get("verified") and entries and entries[0].get("kind") == "plan" else None
            mech = mechanism_for(run, shop, plan, [e for e in entries if e.get("kind") == "round"]).with_epochs(options.epochs)
            mechs[shop] = mech
            data = ShopData.load(run.shop_file(shop))
            shops.append(data)
            say(f"attacking {shop} ({len(data.trainable_users())} users, {'DP' if mech.private else 'no DP'}, {mech.epochs} epochs)")
            seed = options.seed * 101 + i
            attacks[shop] = {
                "mechanism": {
                    "private": mech.private,
                    "source": mech.source,
                    "epochs": mech.epochs,
                    "noise_multiplier": mech.noise_multiplier,
                    "sample_rate": mech.sample_rate,
                    "max_grad_norm": mech.max_grad_norm,
                    "delta": mech.delta,
                    "accountant": mech.accountant,
                    "audited_epsilon": mech.audited_epsilon(),
                },
                "membership": membership_inference(run, data, mech, models=options.models, seed=seed, say=say),
                "canary": canary_audit(run, data, mech, canaries=options.canaries, seed=seed, say=say),
            }
        dp_mechs = {s: _dp_mechanism_for_leakage(run, s, m) for s, m in mechs.items()}
        leakage = update_leakage(run, shops, dp_mechs, seed=options.seed, say=say, shadows=options.shadows)
    for shop in audited:
        verdicts[shop] = _verdict(shop, promise, attacks.get(shop, {}), tampered, private)
    flags = [f"[{x['severity']}] {x['detail']}" for x in integrity["findings"] if x["severity"] in ("tampered", "warning")]
    for shop, v in verdicts.items():
        flags += [f"[inconsistent] {shop}: {c['detail']}" for c in v["checks"] if c["status"] == "fail" and c["check"] != "integrity"]
        flags += [f"[attention] {shop}: {c['detail']}" for c in v["checks"] if c["status"] == "warn"]
    flags += [f"[not private] {n}" for n in promise["notes"] if "deterministic_noise" in n]
    channels = released_channels(history, run.shop_names, private)
    if private:
        outside: dict[str, list[str]] = {}
        for shop, found in channels.items():
            for c in found:
                if c["status"] == "outside the claim":
                    outside.setdefault(f"{c['channel']} ({c['message']}: {', '.join(c['keys'])})", []).append(shop)
        flags += [
            f"[outside the claim] {what} left {len(names)} shop(s) exactly, without noise: no ε covers it"
            for what, names in outside.items()
        ]
    if tampered:
        overall = "TAMPERED"
    elif private and cfg.privacy.deterministic_noise:
        overall = "NOT PRIVATE"
    elif any(v["status"] == "inconsistent" for v in verdicts.values()):
        overall = "INCONSISTENT"
    elif not private:
        overall = "NO PRIVACY CLAIM"
    elif not attacks:
        overall = "NOT ATTACKED"
    elif any(v["status"] == "not refutable at this audit size" for v in verdicts.values()):
        overall = "NOT REFUTABLE AT THIS AUDIT SIZE"
    else:
        overall = "CONSISTENT"
    rounds = [r for r in history.get("rounds", []) if r.get("round", 0) > 0]
    doc = {
        "schema_version": SCHEMA_VERSION,
        "generated": provenance(run)["audit"]["time"],
        "status": overall,
        "flags": flags,
        "run": {
            "provenance": provenance(run),
            "data": data_sources(run),
            "shops": run.shop_names,
            "audited_shops": audited,
            "rounds": len(rounds),
            "planned_rounds": cfg.train.rounds,
            "model": {"name": "InterestModel (text item tower + attentive ego-graph user encoder)", **cfg.to_dict()["model"]},
            "config": cfg.to_dict(),
            "final_eval": rounds[-1].get("eval", {}) if rounds else {},
        },
        "integrity": {"status": integrity["status"], "findings": integrity["findings"]},
        "promise": promise,
        "attacks": {
            "options": {
                "models": options.models,
                "canaries": options.canaries,
                "max_shops": options.max_shops,
                "shadows": options.shadows,
                "epochs": options.epochs,
                "seed": options.seed,
            },
            "shops": attacks,
            "leakage": leakage,
        },
        "verdict": verdicts,
        "channels": channels,
        "seconds": time.perf_counter() - started,
    }
    doc = _clean(doc)
    validate(doc)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "audit.json", json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    atomic_write_text(out / "audit.html", render_html(doc))
    say(f"audit {overall}: wrote {out / 'audit.html'} and {out / 'audit.json'} in {doc['seconds']:.0f} s")
    return doc

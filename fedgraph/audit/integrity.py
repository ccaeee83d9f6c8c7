"""Is the run directory the one the run wrote? Provenance, hashes and cross-checks.

Every record of a run that can be compared with another is compared:

- each shop's privacy ledger verifies (HMAC chain and head; :class:`PrivacyLedger`), and every
  ``round`` entry matches what the server recorded for that shop and round in the round
  history (ledger sequence number, ε, δ); a ledger shorter than the history says it was
  truncated even when its head was rewritten to match;
- the ledger plan agrees with ``config.toml`` (target ε, δ, clipping, accountant, rounds,
  sample rate);
- ``config.toml`` agrees with the configuration ``metrics.json`` recorded when the run
  finished, with the round history (rounds, DP figures present exactly when DP is on) and with
  the checkpoints (model shape);
- every checkpoint matches its digest and the model version the history recorded;
- every shop's data file matches the sizes ``shops/index.json`` recorded.

A problem of severity ``tampered`` puts the report's verdict to "not auditable".
"""

from __future__ import annotations

import getpass
import hashlib
import json
import math
import platform
import pwd
import socket
import sys
import tomllib
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from fedgraph.federation.run_dir import RunDir
from fedgraph.metrics import figure
from fedgraph.privacy import LedgerTamperedError, PrivacyLedger

#: Plan fields that must equal the config's (when the config sets them).
_PLAN_VS_CONFIG = (("target_epsilon", "target_epsilon"), ("max_grad_norm", "max_grad_norm"), ("accountant", "accountant"))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _close(a: Any, b: Any) -> bool:
    a, b = (figure(v) if v is None else v for v in (a, b))  # None: "no figure" as a report file stores NaN
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return a == b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    if old == new or (isinstance(old, (int, float)) and isinstance(new, (int, float)) and _close(old, new)):
        return []
    return [f"{prefix.rstrip('.')}: recorded {old!r}, config.toml now {new!r}"]


class Findings:
    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, severity: str, check: str, detail: str) -> None:
        self.items.append({"severity": severity, "check": check, "detail": detail})


def software_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    from fedgraph import DISTRIBUTION

    for dist in ("fedgraph", "torch", "opacus", "flwr", "torch-geometric", "numpy", "scipy", "matplotlib", "jsonschema"):
        try:
            out[dist] = metadata.version(DISTRIBUTION if dist == "fedgraph" else dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _owner(path: Path) -> str:
    try:
        return pwd.getpwuid(path.stat().st_uid).pw_name
    except (KeyError, OSError):
        return "unknown"


def provenance(run: RunDir) -> dict[str, Any]:
    """Who ran it, when, with what: as far as the run directory records it."""
    metrics = _load_json(run.metrics_file) or {}
    recorded = _load_json(run.path / "run.json") or {}
    started = run.config_file.stat().st_mtime if run.config_file.exists() else None
    finished = run.metrics_file.stat().st_mtime if run.metrics_file.exists() else None
    return {
        "run_dir": str(run.path),
        "owner": recorded.get("user") or (_owner(run.config_file) if run.config_file.exists() else "unknown"),
        "host": recorded.get("host", "not recorded by the run"),
        "command": recorded.get("command", "not recorded by the run"),
        "started": recorded.get("started") or (_iso(started) if started else None),
        "finished": _iso(finished) if finished else None,
        "run_environment": metrics.get("environment", {}),
        "audit": {
            "user": getpass.getuser(),
            "host": socket.gethostname(),
            "platform": platform.platform(),
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "software": software_versions(),
        },
    }


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def data_sources(run: RunDir) -> dict[str, Any]:
    """The data the run used, with SHA-256 of every file it read or prepared."""
    index = _load_json(run.shops_dir / "index.json") or {}
    files: dict[str, str] = {}
    for name in ("config.toml", "shops/index.json"):
        if (run.path / name).exists():
            files[name] = sha256_file(run.path / name)
    for shop in index.get("shops", []):
        for path in (run.shop_file(shop), run.final_shop_file(shop)):
            if path.exists():
                files[f"shops/{path.name}"] = sha256_file(path)
    inputs: dict[str, str] = {}
    try:
        d = run.config.data
        if d.source == "online_retail":
            bundled = Path(__file__).resolve().parent.parent / "datasets" / "online_retail_uci"
            for p in sorted(bundled.glob("*")):
                if p.is_file():
                    inputs[f"fedgraph/datasets/online_retail_uci/{p.name}"] = sha256_file(p)
        elif d.source == "files":
            for p in (d.events, d.catalog):
                if p and Path(p).is_file():
                    inputs[p] = sha256_file(Path(p))
                elif p:
                    inputs[p] = "file no longer present"
    except Exception:  # noqa: BLE001 - an unreadable config is reported by the checks
        pass
    return {"dataset": index.get("dataset", {}), "summary": index.get("summary", []), "run_files": files, "input_files": inputs}


def check_run(run: RunDir) -> dict[str, Any]:
    """Cross-check every record of the run (module docs); returns status, findings and the verified ledgers."""
    f = Findings()
    cfg = None
    try:
        cfg = run.config
    except Exception as exc:  # noqa: BLE001
        f.add("tampered", "config", f"config.toml cannot be read as a fedgraph configuration: {exc}")
    history = _load_json(run.history_file) or {"rounds": []}
    rounds = history.get("rounds", [])
    metrics = _load_json(run.metrics_file)
    index = _load_json(run.shops_dir / "index.json") or {}
    shops = list(index.get("shops", []))
    in_rounds = set(index.get("round_shops", shops))  # a shop with no customer to train on is not called

    # -- config.toml against the digest the run recorded when it started
    recorded = _load_json(run.path / "run.json")
    if recorded and run.config_file.exists() and recorded.get("config_sha256") != sha256_file(run.config_file):
        f.add("tampered", "config", "config.toml differs from the file the run started with (its SHA-256 recorded in run.json)")
    # -- config.toml against what the run recorded when it finished
    if cfg is not None:
        if metrics and isinstance(metrics.get("config"), dict):
            try:
                now = tomllib.loads(run.config_file.read_text())
            except tomllib.TOMLDecodeError as exc:
                now = {}
                f.add("tampered", "config", f"config.toml is not valid TOML: {exc}")
            changes = _diff(metrics["config"], now)
            if changes:
                f.add("tampered", "config", "config.toml was edited after the run finished: " + "; ".join(changes))
        else:
            f.add(
                "warning",
                "config",
                "metrics.json (the run's own record of its configuration) is missing: config edits after the run cannot be ruled out",
            )
        trained = [r for r in rounds if r.get("round", 0) > 0]
        if trained and not history.get("stopped") and trained[-1]["round"] != cfg.train.rounds:
            f.add(
                "tampered" if trained[-1]["round"] > cfg.train.rounds else "warning",
                "config",
                f"the history holds {trained[-1]['round']} rounds but config.toml says train.rounds={cfg.train.rounds}",
            )
        has_eps = any("epsilon" in m for r in trained for m in r.get("train", {}).values())
        if trained and has_eps != cfg.privacy.enabled:
            f.add(
                "tampered",
                "config",
                f"config.toml says privacy.enabled={str(cfg.privacy.enabled).lower()} but the round history "
                f"{'reports' if has_eps else 'has no'} DP figures (ε) from the shops",
            )

    # -- checkpoints
    versions = {r["round"]: r.get("model_version") for r in rounds}
    for rnd in run.checkpoint_rounds():
        try:
            payload = run.load_checkpoint(rnd)
        except Exception as exc:  # noqa: BLE001
            f.add("tampered", "checkpoints", str(exc))
            continue
        recorded = versions.get(rnd)
        version = payload.get("extra", {}).get("model_version")
        if recorded and version and recorded != version:
            f.add("tampered", "checkpoints", f"checkpoint round {rnd} is model {version}, the history recorded {recorded}")
        if cfg is not None and rnd == run.checkpoint_rounds()[-1]:
            state = payload["state_dict"]
            shape = tuple(state["item_out.weight"].shape) if "item_out.weight" in state else None
            if shape and shape != (cfg.model.dim, cfg.model.hidden):
                f.add(
                    "tampered",
                    "config",
                    f"the checkpoints hold a model of dim×hidden {shape}, config.toml says ({cfg.model.dim}, {cfg.model.hidden})",
                )

    # -- shop data against the index
    for row in index.get("summary", []):
        path = run.shop_file(row["shop"])
        if not path.exists():
            f.add("tampered", "data", f"{path.name} is missing")
            continue
        try:
            from fedgraph.shop import ShopData

            data = ShopData.load(path)
            if (data.num_users, data.num_items, data.num_interactions) != (row["users"], row["items"], row["interactions"]):
                f.add(
                    "tampered",
                    "data",
                    f"{path.name} holds {data.num_users} users, {data.num_items} items, "
                    f"{data.num_interactions} interactions; the index recorded {row['users']}, {row['items']}, {row['interactions']}",
                )
        except Exception as exc:  # noqa: BLE001
            f.add("tampered", "data", f"{path.name}: {exc}")

    # -- ledgers against the history and the config
    ledgers: dict[str, dict[str, Any]] = {}
    private = cfg.privacy.enabled if cfg is not None else False
    for shop in shops:
        ledger = PrivacyLedger(run.privacy_dir(shop))
        reported = {r["round"]: r["train"][shop] for r in rounds if shop in r.get("train", {}) and "ledger-seq" in r["train"][shop]}
        skipped = {r["round"]: r["budget_exhausted"][shop] for r in rounds if shop in (r.get("budget_exhausted") or {})}
        info: dict[str, Any] = {"verified": False, "entries": [], "error": None}
        ledgers[shop] = info
        if shop not in in_rounds and not ledger.exists() and not reported:
            info["not_in_rounds"] = True
            continue
        if not ledger.exists():
            if private or reported:
                f.add(
                    "tampered",
                    "ledger",
                    f"{shop}: the privacy ledger is missing although the run {'used DP' if private else 'reported ε'} for this shop",
                )
            continue
        try:
            entries = ledger.verify()
        except LedgerTamperedError as exc:
            info["error"] = str(exc)
            f.add("tampered", "ledger", f"{shop}: {exc}")
            continue
        info.update(verified=True, entries=entries)
        by_seq = {e["seq"]: e for e in entries}
        for rnd, m in sorted({**reported, **skipped}.items()):
            seq = int(m.get("ledger-seq", -1))
            e = by_seq.get(seq)
            if e is None:
                f.add(
                    "tampered",
                    "ledger",
                    f"{shop}: the server recorded ledger entry {seq} for round {rnd}, but the "
                    f"ledger holds only {len(entries)} entries: it was truncated or rolled back",
                )
                continue
            if e.get("round") != rnd or not _close(e.get("epsilon"), m.get("epsilon")):
                f.add(
                    "tampered",
                    "ledger",
                    f"{shop}: ledger entry {seq} says round {e.get('round')}, ε={e.get('epsilon')}; "
                    f"the server recorded round {rnd}, ε={m.get('epsilon')}",
                )
        if reported and max(int(m["ledger-seq"]) for m in reported.values()) < len(entries) - 1:
            extra = [e for e in entries if e["seq"] > max(int(m["ledger-seq"]) for m in reported.values()) and e.get("kind") == "round"]
            if extra:
                f.add(
                    "warning",
                    "ledger",
                    f"{shop}: the ledger holds {len(extra)} round(s) the server's history does not "
                    "(a round that failed after the shop trained, or a resumed run)",
                )
        plan = entries[0] if entries and entries[0].get("kind") == "plan" else None
        if plan is None:
            f.add("tampered", "ledger", f"{shop}: the ledger does not start with a plan")
            continue
        if cfg is not None:
            p = cfg.privacy
            for key, ckey in _PLAN_VS_CONFIG:
                if not _close(plan.get(key), getattr(p, ckey)):
                    f.add(
                        "tampered",
                        "config",
                        f"{shop}: the ledger plan has {key}={plan.get(key)!r}, config.toml has privacy.{ckey}={getattr(p, ckey)!r}",
                    )
            if p.delta and not _close(plan.get("delta"), p.delta):
                f.add("tampered", "config", f"{shop}: the ledger plan has δ={plan.get('delta')}, config.toml privacy.delta={p.delta}")
            if p.noise_multiplier and not _close(plan.get("noise_multiplier"), p.noise_multiplier):
                f.add(
                    "tampered",
                    "config",
                    f"{shop}: the ledger plan has σ={plan.get('noise_multiplier')}, "
                    f"config.toml privacy.noise_multiplier={p.noise_multiplier}",
                )
            if plan.get("planned_rounds") != cfg.train.rounds:
                f.add(
                    "tampered",
                    "config",
                    f"{shop}: the ledger plan was made for {plan.get('planned_rounds')} rounds, "
                    f"config.toml says train.rounds={cfg.train.rounds}",
                )
            users = plan.get("users")
            if users and not _close(plan.get("sample_rate"), min(1.0, cfg.train.batch_size / max(1, users))):
                f.add(
                    "tampered",
                    "config",
                    f"{shop}: the ledger's sample rate {plan.get('sample_rate')} does not follow from "
                    f"train.batch_size={cfg.train.batch_size} and {users} users",
                )
            if not private:
                f.add("tampered", "config", f"{shop}: a privacy ledger exists but config.toml says privacy.enabled=false")
    status = "tampered" if any(x["severity"] == "tampered" for x in f.items) else "ok"
    if not rounds or not run.checkpoint_rounds():
        status = "incomplete" if status == "ok" else status
        f.add("warning", "run", "the run has no finished rounds (no checkpoints)")
    return {"status": status, "findings": f.items, "ledgers": ledgers}

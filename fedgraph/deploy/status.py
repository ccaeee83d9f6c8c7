"""``fedgraph client status``: what a shop daemon is doing, from its state directory.

Reads ``STATE_DIR/status.json`` (written by the running daemon every poll) for the live part --
running or not, connected or not -- and the event log, graph store, global model and privacy
ledger directly, so it also works while the daemon is stopped.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from fedgraph.deploy.settings import ShopConfig


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
        return True
    except (ProcessLookupError, PermissionError, ValueError):
        return False


def privacy_left(cfg: ShopConfig) -> str:
    """ε spent and left from the shop's privacy ledger, or why there is none."""
    ledger_dir = cfg.state_dir / "run" / "privacy" / cfg.shop.name
    try:
        from fedgraph.privacy.ledger import PrivacyLedger
    except ImportError:
        return "n/a (no DP ledger)"
    ledger = PrivacyLedger(ledger_dir, key_path=cfg.ledger_key_path)
    if not ledger.exists():
        return "n/a (no DP ledger)"
    try:
        entries = [e for e in ledger.entries() if "epsilon" in e and "target_epsilon" in e]
    except Exception as exc:  # noqa: BLE001 - a tampered/unreadable ledger is reported, not fatal here
        return f"unknown: ledger {ledger_dir} unreadable ({type(exc).__name__}: {exc})"
    if not entries:
        plan = ledger.plan() or {}
        target = plan.get("target_epsilon")
        return f"ε 0 spent of {target:g} (no round trained yet)" if target is not None else "n/a (ledger has no plan)"
    last = entries[-1]
    eps, target = float(last["epsilon"]), float(last["target_epsilon"])
    return f"ε {eps:.3f} spent of {target:g}, {max(0.0, target - eps):.3f} left (δ={float(last.get('delta', 0)):.1e}, after round {last.get('round')})"


def collect(cfg: ShopConfig) -> dict[str, Any]:
    from fedgraph.deploy.paths import ShopPaths

    paths = ShopPaths(cfg.state_dir)
    live: dict[str, Any] = json.loads(paths.status.read_text()) if paths.status.exists() else {}
    running = bool(live.get("running")) and _alive(live.get("pid"))
    supernode = live.get("supernode") or {}
    connected = running and supernode.get("state") == "connected"
    out: dict[str, Any] = {
        "shop": cfg.shop.name,
        "daemon": "running" if running else "stopped",
        "pid": live.get("pid") if running else None,
        "updated_at": live.get("updated_at"),
        "superlink": cfg.server.address,
        "connected": connected,
        "connection": supernode.get("state", "unknown") if running else "not running",
        "node_id": supernode.get("node_id"),
        "connection_detail": supernode.get("detail", ""),
        "isolation": cfg.daemon.isolation,
    }
    last = json.loads(paths.last_message.read_text()) if paths.last_message.exists() else {}
    out["last_round"] = last.get("round")
    out["last_message"] = last
    model = json.loads(paths.model.with_suffix(".json").read_text()) if paths.model.with_suffix(".json").exists() else {}
    out["model_version"] = model.get("model_version")
    out["model_round"] = model.get("round")
    if paths.events.exists():
        from fedgraph.deploy.ingest import EventLog

        events = EventLog(paths.events)
        try:
            out["events"] = events.counts()
            out["graph_event_offset"] = events.offset("graph_offset")
        finally:
            events.close()
    else:
        out["events"] = {
            "events": 0,
            "event_offset": 0,
            "files_ingested": 0,
            "files_quarantined": 0,
            "bad_rows": 0,
            "customers_forgotten": 0,
        }
    out["graph"] = None
    if paths.graph.exists():  # plain SQLite: `status` stays quick (no torch import via fedgraph.graph)
        import sqlite3

        keys = (
            "model_version",
            "round",
            "updated_at",
            "event_offset",
            "n_users",
            "n_items",
            "n_interests",
            "n_user_interest",
            "n_user_item",
            "n_item_item",
            "n_upserts",
        )
        db = sqlite3.connect(f"file:{paths.graph}?mode=ro", uri=True, timeout=10)
        try:
            row = db.execute(f"SELECT {', '.join(keys)} FROM graph_versions WHERE shop = ? AND is_current = 1", (cfg.shop.name,)).fetchone()
        except sqlite3.Error:
            row = None
        finally:
            db.close()
        if row:
            out["graph"] = dict(zip(keys, row))
    out["privacy"] = privacy_left(cfg)
    return out


def _ago(ts: float | None) -> str:
    if not ts:
        return "never"
    s = max(0.0, time.time() - float(ts))
    return f"{s:.0f} s ago" if s < 120 else f"{s / 60:.0f} min ago" if s < 7200 else f"{s / 3600:.1f} h ago"


def render(s: dict[str, Any]) -> str:
    ev = s["events"]
    lines = [f"shop {s['shop']}: daemon {s['daemon']}" + (f" (pid {s['pid']}, status written {_ago(s['updated_at'])})" if s["pid"] else "")]
    conn = "connected" if s["connected"] else f"NOT connected ({s['connection']})"
    if s.get("node_id") and s["connected"]:
        conn += f" as node {s['node_id']}"
    if s.get("connection_detail") and not s["connected"]:
        conn += f": {s['connection_detail']}"
    lines.append(f"  server          {s['superlink']}: {conn}")
    lm = s.get("last_message") or {}
    lines.append(
        f"  last round      {s['last_round'] if s['last_round'] is not None else 'none yet'}"
        + (f" ({lm.get('type')}, {_ago(lm.get('at'))})" if lm else "")
    )
    lines.append(
        f"  model version   {s['model_version'] or 'none yet (graph uses the initial model)'}"
        + (f" (global model after round {s['model_round']})" if s["model_version"] else "")
    )
    lines.append(
        f"  events          {ev['events']:,} ingested (event offset {ev['event_offset']:,}); {ev['files_ingested']} file(s)/batch(es) ingested, "
        f"{ev['files_quarantined']} quarantined, {ev['bad_rows']} bad row(s)"
        + (f", {ev['customers_forgotten']} customer(s) forgotten on request" if ev.get("customers_forgotten") else "")
    )
    g = s.get("graph")
    if g:
        lines.append(
            f"  graph           {g['n_users']:,} users, {g['n_items']:,} items, {g['n_interests']:,} interests; "
            f"{g['n_user_interest']:,} interest + {g['n_user_item']:,} recommendation + {g['n_item_item']:,} similarity edges; "
            f"up to event offset {s.get('graph_event_offset', 0):,}"
        )
    else:
        lines.append("  graph           none yet (built once events are ingested)")
    lines.append(f"  privacy budget  {s['privacy']}")
    return "\n".join(lines)

"""Ingest-to-graph latency of a shop daemon: event file lands in the drop folder -> the user's
interest edges in graph.sqlite reflect it.

Starts a real ``fedgraph client start`` daemon (its SuperLink address points nowhere, so no
training happens; the graph is maintained with the initial model, which costs the same as a
trained one), waits until it has ingested and built the graph for a synthetic shop's history,
then streams ``--events`` new events into the drop folder, ``--per-file`` events per file, one
file every ``--interval-s`` seconds (written as ``.part`` and renamed, as a shop's exporter should).
A watcher polls the graph store every 5 ms: an event counts as applied when its user's node row
carries an event offset >= the event's own offset (offsets are dense, so the k-th new event has
offset ``base + k``). Prints one table: median, p95 and max latency per configuration.

    .venv/bin/python simulations/bench_ingest_latency.py                 # 1,000 events, two configs
    .venv/bin/python simulations/bench_ingest_latency.py --events 200 --configs 0.2:0.2
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedgraph.deploy.demo import make_demo, write_events  # noqa: E402
from fedgraph.runtime.processes import free_port  # noqa: E402


def _new_events(base: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """``n`` new events of existing users on existing items, later than everything so far."""
    rng = np.random.default_rng(seed)
    users = base["user"].unique()
    items = base["item"].unique()
    t0 = pd.Timestamp(base["timestamp"].max()) + pd.Timedelta(hours=1)
    return pd.DataFrame(
        {
            "event_id": [f"bench{seed}-{k:06d}" for k in range(n)],
            "user": rng.choice(users, n),
            "item": rng.choice(items, n),
            "timestamp": [t0 + pd.Timedelta(seconds=int(k)) for k in range(n)],
            "kind": rng.choice(["view", "cart", "purchase"], n),
            "weight": 1.0,
        }
    )


def _graph_offsets(db: sqlite3.Connection, shop: str) -> dict[str, int]:
    try:
        return {u: int(o or 0) for u, o in db.execute("SELECT user_id, event_offset FROM users WHERE shop = ?", (shop,))}
    except sqlite3.Error:
        return {}


def run_config(root: Path, *, events: int, per_file: int, interval_s: float, poll_s: float, settle_s: float, cache: str) -> dict:
    demo = make_demo(root, shops=1, users=(300, 300), items=(400, 400), port=free_port(), cache_dir=cache, poll_s=poll_s, settle_s=settle_s)
    shop = demo.shops[0]
    history = demo.events[shop]
    write_events(history, demo.drop(shop) / "history.csv")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "fedgraph.cli", "client", "start", "--config", str(demo.shop_config(shop))],
        env=env,
        cwd=root,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        graph = demo.state(shop) / "graph.sqlite"
        base = len(history)
        deadline = time.monotonic() + 600
        while True:  # the history ingested and the graph built
            if graph.exists():
                db = sqlite3.connect(f"file:{graph}?mode=ro", uri=True)
                offs = _graph_offsets(db, shop)
                db.close()
                if offs and max(offs.values()) >= base:
                    break
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the daemon did not build the graph (exit {daemon.poll()}); see {demo.state(shop) / 'logs'}")
            time.sleep(0.2)
        new = _new_events(history, events, seed=1)
        landed = np.full(events, np.nan)
        applied = np.full(events, np.nan)
        db = sqlite3.connect(f"file:{graph}?mode=ro", uri=True)
        next_file = 0
        start = time.monotonic()
        while np.isnan(applied).any():
            now = time.monotonic()
            if next_file * per_file < events and now >= start + next_file * interval_s:
                lo, hi = next_file * per_file, min(events, (next_file + 1) * per_file)
                write_events(new.iloc[lo:hi], demo.drop(shop) / f"stream-{next_file:05d}.csv")
                landed[lo:hi] = time.monotonic()
                next_file += 1
            offs = _graph_offsets(db, shop)
            t = time.monotonic()
            pending = np.flatnonzero(~np.isnan(landed) & np.isnan(applied))
            for k in pending:
                if offs.get(new["user"].iat[k], 0) >= base + k + 1:
                    applied[k] = t
            if t - start > 600:
                raise SystemExit("timed out: events not applied within 10 minutes")
            time.sleep(0.005)
        db.close()
        lat = (applied - landed) * 1000.0
        log_lines = [__import__("json").loads(x) for x in (demo.state(shop) / "logs" / "daemon.jsonl").read_text().splitlines()]
        updates = [x for x in log_lines if x["event"] == "graph_update"]
        ingests = [x for x in log_lines if x["event"] == "file_ingested"]
        return {
            "poll_s": poll_s,
            "settle_s": settle_s,
            "events": events,
            "median_ms": float(np.median(lat)),
            "p95_ms": float(np.percentile(lat, 95)),
            "max_ms": float(lat.max()),
            "users": int(history["user"].nunique()),
            "items": int(history["item"].nunique()),
            "history_events": base,
            "updates": len(updates),
            "update_ms": 1000 * float(np.mean([u["seconds"] for u in updates])) if updates else float("nan"),
            "users_per_update": float(np.mean([u["users"] for u in updates])) if updates else float("nan"),
            "files": len(ingests),
        }
    finally:
        try:
            os.killpg(daemon.pid, signal.SIGTERM)
            daemon.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(daemon.pid, signal.SIGKILL)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=1000)
    p.add_argument("--per-file", type=int, default=1)
    p.add_argument("--interval-s", type=float, default=0.1)
    p.add_argument("--configs", default="0.2:0.2,0.05:0.0", help="poll_s:settle_s pairs (daemon.poll_s, source.settle_s)")
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "fedgraph"), help="text-embedding cache")
    args = p.parse_args()
    rows = []
    for pair in args.configs.split(","):
        poll_s, settle_s = (float(x) for x in pair.split(":"))
        with tempfile.TemporaryDirectory(prefix="fedgraph-bench-ingest-") as tmp:
            rows.append(
                run_config(
                    Path(tmp),
                    events=args.events,
                    per_file=args.per_file,
                    interval_s=args.interval_s,
                    poll_s=poll_s,
                    settle_s=settle_s,
                    cache=args.cache_dir,
                )
            )
    print(
        f"\ningest-to-graph latency: {args.events} events, {args.per_file} per file, a file every {args.interval_s * 1000:.0f} ms; "
        f"shop of {rows[0]['users']} users, {rows[0]['items']} items, {rows[0]['history_events']} prior events"
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.python_implementation()} {platform.python_version()}, load avg {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'poll_s':>7} {'settle_s':>8} | {'median ms':>9} {'p95 ms':>8} {'max ms':>8} | {'graph passes':>12} {'users/pass':>10} {'ms/pass':>8}"
    )
    for r in rows:
        print(
            f"{r['poll_s']:>7.2f} {r['settle_s']:>8.2f} | {r['median_ms']:>9.0f} {r['p95_ms']:>8.0f} {r['max_ms']:>8.0f} | "
            f"{r['updates']:>12} {r['users_per_update']:>10.1f} {r['update_ms']:>8.0f}"
        )


if __name__ == "__main__":
    main()

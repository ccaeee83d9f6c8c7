"""Seconds per round of a real deployment on loopback: warm in-process ClientApp vs Flower's default
(a fresh ``flwr-clientapp`` process per message), over TLS with SuperNode authentication.

For each isolation mode: a SuperLink (``fedgraph server start``) and two shop daemons
(``fedgraph client start``) on 127.0.0.1 with small synthetic shops, ``--rounds`` rounds; the
per-round time is the server's own measurement (train + aggregate + evaluate, from
``federated_history.json``). Prints one table.

    .venv/bin/python simulations/bench_deploy_rounds.py --rounds 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedgraph.deploy.demo import make_demo, write_events  # noqa: E402
from fedgraph.runtime.processes import free_port  # noqa: E402


def run(root: Path, isolation: str, rounds: int, cache: str) -> dict:
    # plain FedAvg: the figure is the cost of the isolation mode, not of SecAgg+ (more messages a round)
    demo = make_demo(root, shops=2, port=free_port(), rounds=rounds, isolation=isolation, cache_dir=cache, secure_aggregation=False)
    for shop in demo.shops:
        write_events(demo.events[shop], demo.drop(shop) / "history.csv")
    cli = [sys.executable, "-m", "fedgraph.cli"]
    procs = []
    started = time.monotonic()
    try:
        for shop in demo.shops:
            procs.append(
                subprocess.Popen(
                    [*cli, "client", "start", "--config", str(demo.shop_config(shop))],
                    cwd=root,
                    start_new_session=True,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        server = subprocess.run(
            [*cli, "server", "start", "--config", str(demo.server_config)], cwd=root, capture_output=True, text=True, timeout=1800
        )
        if server.returncode != 0:
            raise SystemExit(f"server failed ({isolation}):\n{server.stdout}\n{server.stderr}")
        total = time.monotonic() - started
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
    history = json.loads((root / "server-state" / "run" / "federated_history.json").read_text())
    secs = [r["seconds"] for r in history["rounds"] if r["round"] >= 1]
    tasks = []
    for shop in demo.shops:
        for line in (demo.state(shop) / "logs" / "daemon.jsonl").read_text().splitlines():
            entry = json.loads(line)
            if entry["event"] == "clientapp_task":
                tasks.append(entry["seconds"])
    return {
        "isolation": isolation,
        "rounds": len(secs),
        "mean_s": statistics.mean(secs),
        "median_s": statistics.median(secs),
        "first_s": secs[0],
        "total_s": total,
        "task_mean_s": statistics.mean(tasks) if tasks else float("nan"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--modes", default="warm,subprocess")
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "fedgraph"))
    args = p.parse_args()
    rows = []
    for mode in args.modes.split(","):
        with tempfile.TemporaryDirectory(prefix=f"fedgraph-bench-rounds-{mode}-") as tmp:
            rows.append(run(Path(tmp), mode, args.rounds, args.cache_dir))
    print(
        f"\nseconds per round, SuperLink + 2 shop daemons on 127.0.0.1, TLS + SuperNode auth, {args.rounds} rounds "
        f"(train + evaluate messages per round)"
    )
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}")
    print(f"{'isolation':<11} | {'mean s/round':>12} {'median':>7} {'round 1':>8} | {'warm task s':>11} | {'wall s (start..end)':>19}")
    for r in rows:
        print(
            f"{r['isolation']:<11} | {r['mean_s']:>12.1f} {r['median_s']:>7.1f} {r['first_s']:>8.1f} | {r['task_mean_s']:>11.2f} | {r['total_s']:>19.0f}"
        )


if __name__ == "__main__":
    main()

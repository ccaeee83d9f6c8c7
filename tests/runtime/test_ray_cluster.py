"""Simulations on an existing Ray cluster (issue 15): a head and a second node, each a separate
`ray start --block` process on loopback with its own CPU, joined by `fedgraph simulate
federation.ray_address=...`; the shops run on both nodes and the figures equal a local run's."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from fedgraph.runtime import processes

pytestmark = pytest.mark.timeout(600)

SMALL = [
    "data.source=synthetic",
    "data.synthetic_shops=3",
    "data.synthetic_users_per_shop=[30, 50]",
    "data.synthetic_items_per_shop=[40, 60]",
    "train.rounds=2",
    "train.local_epochs=1",
    "evaluation.baselines=[]",
]


def _ray(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "ray"), "start", "--block", "--disable-usage-stats", *args]


def _alive_nodes(address: str) -> int:
    script = f"import ray; ray.init(address={address!r}, logging_level='error'); print(sum(n['Alive'] for n in ray.nodes()))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    return int(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 and done.stdout.strip() else 0


@pytest.fixture(scope="module")
def cluster():
    """A two-node Ray cluster on 127.0.0.1 (head and worker each one CPU, small object stores);
    every process it started is stopped afterwards."""
    temp = Path(tempfile.mkdtemp(prefix="fgray", dir="/tmp"))  # Ray's socket paths must stay short
    port = processes.free_port()
    address = f"127.0.0.1:{port}"
    env = {**processes.flower_env(temp / "home"), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--object-store-memory", "100000000"]
    head = processes.spawn(
        _ray("--head", "--port", str(port), "--include-dashboard", "false", "--temp-dir", str(temp / "ray"), *common),
        env=env,
        log_path=temp / "head.log",
    )
    worker = None
    try:
        deadline = time.monotonic() + 90
        while not processes.reachable(address) and time.monotonic() < deadline:
            time.sleep(0.5)
        worker = processes.spawn(_ray("--address", address, *common), env=env, log_path=temp / "worker.log")
        while _alive_nodes(address) < 2 and time.monotonic() < deadline:
            time.sleep(1)
        if _alive_nodes(address) < 2:
            pytest.fail(f"the two-node Ray cluster did not come up: {(temp / 'head.log').read_text()[-2000:]}")
        yield address
    finally:
        processes.stop_tree(worker)
        processes.stop_tree(head)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_simulation_on_a_two_node_cluster_uses_both_nodes_and_equals_a_local_run(cluster, tmp_path, text_cache, run_fedgraph):
    cache = f"features.cache_dir='{text_cache}'"
    remote = run_fedgraph("simulate", "--out", str(tmp_path / "cluster"), *SMALL, cache, f"federation.ray_address={cluster}")
    assert remote.returncode == 0, remote.stdout[-3000:] + remote.stderr[-3000:]
    assert "Ray cluster at" in remote.stdout and "2 nodes, every one sees" in remote.stdout
    local = run_fedgraph("simulate", "--out", str(tmp_path / "local"), *SMALL, cache)
    assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]

    nodes = set()
    for record in (tmp_path / "cluster" / "ray_nodes").glob("*.json"):
        nodes |= set(json.loads(record.read_text()).values())
    assert len(nodes) == 2, nodes  # the shops' training ran on both nodes

    def rounds(run: Path):
        history = json.loads((run / "federated_history.json").read_text())
        return [(r["round"], r["model_version"], r.get("eval")) for r in history["rounds"]]

    assert rounds(tmp_path / "cluster") == rounds(tmp_path / "local")
    metrics = [json.loads((tmp_path / run / "metrics.json").read_text())["methods"]["federated"] for run in ("cluster", "local")]
    assert metrics[0] == metrics[1]


def test_a_ray_address_that_is_not_an_address_is_refused_up_front(tmp_path, run_fedgraph):
    done = run_fedgraph("simulate", "--out", str(tmp_path / "x"), *SMALL, "federation.ray_address=not an address", timeout=120)
    assert done.returncode != 0 and "federation.ray_address must be" in done.stderr and "Traceback" not in done.stderr

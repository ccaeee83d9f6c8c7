"""Secure aggregation over the network: a deployment (`fedgraph server start`) has SecAgg+ on by
default, and three shop daemons complete rounds with it over TLS with SuperNode authentication.

Slow (about two minutes: SecAgg+ takes four message exchanges a round and a SuperNode polls
every 3 s), so behind the ``slow`` marker: ``pytest -m slow tests/deploy/test_secagg.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from fedgraph.deploy.demo import make_demo, write_events
from fedgraph.runtime.processes import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _run_federation(tmp_path, demo, env=None) -> subprocess.CompletedProcess:
    """Start every shop daemon, run the server to the end, stop the daemons; the server's result."""
    cli = [sys.executable, "-m", "fedgraph.cli"]
    daemons = [
        subprocess.Popen(
            [*cli, "client", "start", "--config", str(demo.shop_config(shop))],
            cwd=tmp_path,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            env=env,
        )
        for shop in demo.shops
    ]
    try:
        return subprocess.run(
            [*cli, "server", "start", "--config", str(demo.server_config)], cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
    finally:
        for p in daemons:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in daemons:
            p.wait(timeout=60)


def test_deployment_runs_secure_aggregation_by_default(tmp_path, text_cache):
    from fedgraph.deploy.settings import ServerConfig

    demo = make_demo(tmp_path, shops=3, port=free_port(), rounds=2, min_train_shops=3, cache_dir=text_cache)
    federation = (tmp_path / "federation.toml").read_text()
    (tmp_path / "federation.toml").write_text(federation.replace("\nsecure_aggregation = true\n", "\n"))  # the default
    assert ServerConfig.load(demo.server_config).run_config().privacy.secure_aggregation is True
    for shop in demo.shops:
        write_events(demo.events[shop], demo.drop(shop) / "history.csv")
    server = _run_federation(tmp_path, demo)
    assert server.returncode == 0, server.stdout[-3000:] + server.stderr[-3000:]
    assert "secure aggregation (SecAgg+)" in server.stdout
    history = json.loads((tmp_path / "server-state" / "run" / "federated_history.json").read_text())
    rounds = [r for r in history["rounds"] if r["round"] >= 1]
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(set(r["train"]) == set(demo.shops) and not r["failures"] for r in rounds), rounds
    bundle = (tmp_path / "server-state" / "app" / "pyproject.toml").read_text()
    assert 'clientapp = "fedgraph.apps.client_app:secagg_app"' in bundle


def test_deployed_secure_sum_equals_fedavg_of_the_same_updates(tmp_path, text_cache):
    """Issue 12.2: the deployment's SecAgg+ scaled each update by its shop's user count against a
    max_weight of 1 (clipped to ±8, wrapping past 1,024 users). Three daemons over TLS, 1,100+
    customers in all: the server's global model after round 1 is the mean of the updates the shops
    sent (kept by each shop under FEDGRAPH_FAULT_INJECTION), within SecAgg+'s quantisation error."""
    import torch

    from fedgraph.config import RunConfig
    from fedgraph.federation.run_dir import RunDir
    from fedgraph.federation.secure_aggregation import quantisation_error_bound

    demo = make_demo(tmp_path, shops=3, port=free_port(), rounds=1, min_train_shops=3, cache_dir=text_cache, users=(370, 420))
    assert sum(demo.events[s]["user"].nunique() for s in demo.shops) > 1024
    for shop in demo.shops:
        write_events(demo.events[shop], demo.drop(shop) / "history.csv")
    server = _run_federation(tmp_path, demo, env={**os.environ, "FEDGRAPH_FAULT_INJECTION": "1"})
    assert server.returncode == 0, server.stdout[-3000:] + server.stderr[-3000:]
    secure = RunDir.at(tmp_path / "server-state" / "run").load_checkpoint(1)["state_dict"]
    sent = [torch.load(tmp_path / shop / "state" / "sent" / "round-0001.pt", weights_only=True) for shop in demo.shops]
    fedavg = {k: sum(s[k] for s in sent) / len(sent) for k in secure}
    worst = max(float((secure[k] - fedavg[k]).abs().max()) for k in secure)
    assert worst <= quantisation_error_bound(RunConfig(), num_shops=3), worst
    moved = max(float((sent[0][k] - sent[1][k]).abs().max()) for k in secure)
    assert moved > 100 * worst  # the shops' updates differ: the comparison can tell them apart

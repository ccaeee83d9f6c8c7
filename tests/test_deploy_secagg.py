"""Secure aggregation over the network: a deployment (`fedgraph server start`) has SecAgg+ on by
default, and three shop daemons complete rounds with it over TLS with SuperNode authentication.

Slow (about two minutes: SecAgg+ takes four message exchanges a round and a SuperNode polls
every 3 s), so behind the ``slow`` marker: ``pytest -m slow tests/test_deploy_secagg.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from fedgraph.deploy.demo import make_demo, write_events
from fedgraph.deploy.processes import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_deployment_runs_secure_aggregation_by_default(tmp_path, text_cache):
    from fedgraph.deploy.settings import ServerConfig

    demo = make_demo(tmp_path, shops=3, port=free_port(), rounds=2, min_train_shops=3, cache_dir=text_cache)
    federation = (tmp_path / "federation.toml").read_text()
    (tmp_path / "federation.toml").write_text(federation.replace("[privacy]\nsecure_aggregation = true\n", ""))  # the default
    assert ServerConfig.load(demo.server_config).run_config().privacy.secure_aggregation is True
    for shop in demo.shops:
        write_events(demo.events[shop], demo.drop(shop) / "history.csv")
    cli = [sys.executable, "-m", "fedgraph.cli"]
    daemons = [subprocess.Popen([*cli, "client", "start", "--config", str(demo.shop_config(shop))], cwd=tmp_path, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT) for shop in demo.shops]  # fmt: skip
    try:
        server = subprocess.run([*cli, "server", "start", "--config", str(demo.server_config)], cwd=tmp_path, capture_output=True,
                                text=True, timeout=600)  # fmt: skip
    finally:
        for p in daemons:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in daemons:
            p.wait(timeout=60)
    assert server.returncode == 0, server.stdout[-3000:] + server.stderr[-3000:]
    assert "secure aggregation (SecAgg+)" in server.stdout
    history = json.loads((tmp_path / "server-state" / "run" / "federated_history.json").read_text())
    rounds = [r for r in history["rounds"] if r["round"] >= 1]
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(set(r["train"]) == set(demo.shops) and not r["failures"] for r in rounds), rounds
    bundle = (tmp_path / "server-state" / "app" / "pyproject.toml").read_text()
    assert 'clientapp = "clients.client_app:secagg_app"' in bundle

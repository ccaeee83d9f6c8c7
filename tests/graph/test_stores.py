"""Interest-graph stores are registry entries (issue 17.2): a backend is one file and a config
key (``graph.store``), used by the simulation, the shop daemon and ``fedgraph graph``."""

from __future__ import annotations

import pytest

from fedgraph.config import ConfigError, RunConfig
from fedgraph.graph.stores import STORES, StoreSpec, open_store


def test_sqlite_is_the_registered_default():
    assert "sqlite" in STORES and RunConfig().graph.store == "sqlite"


def test_an_unknown_store_is_a_clear_config_error():
    with pytest.raises(ConfigError, match="graph.store must be one of .*sqlite"):
        RunConfig.load(overrides=["graph.store=kuzu"])


def test_a_new_backend_is_one_registry_entry_and_fedgraph_graph_reads_it(monkeypatch, tmp_path, capsys):
    from fedgraph.cli import main

    opened = []

    class Memory:
        def __init__(self, location, create):
            opened.append((location, create))

        def shops(self):
            return ["berlin"]

        def summary(self, shop):
            return {"shop": shop, "users": 3, "items": 7}

        def close(self):
            pass

    spec = StoreSpec("memory", open=Memory, location=lambda run_path: run_path / "graph.mem", description="a test store")
    monkeypatch.setitem(STORES, spec.name, spec)
    config = RunConfig.load(overrides=["graph.store=memory"])
    config.save(tmp_path / "config.toml")
    (tmp_path / "graph.mem").write_text("")
    assert isinstance(open_store(config, tmp_path), Memory)
    assert main(["graph", str(tmp_path), "shops"]) == 0
    out = capsys.readouterr().out
    assert "berlin" in out and "users=3" in out
    assert opened[-1] == (tmp_path / "graph.mem", False)  # a query never creates a store

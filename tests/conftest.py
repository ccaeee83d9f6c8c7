"""Shared fixtures. Test data is made by the factory fixtures below (``make_events``,
``make_catalog``, ``planted_shop``, ``run_fedgraph``, ``train_reply``); test files never import
from each other. The tree mirrors the package: ``tests/<subpackage>/`` tests ``fedgraph/<subpackage>/``,
and ``tests/test_<module>.py`` tests a top-level module ``fedgraph/<module>.py``."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from fedgraph.shop import build_shop_data

# Tests never touch the user's cache or the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")


@pytest.fixture(scope="session")
def text_cache(tmp_path_factory):
    """One text-embedding cache directory shared by the whole test session."""
    return tmp_path_factory.mktemp("text-cache")


# Longest files first (longest-processing-time order): with two xdist workers taking one file
# at a time, the long Flower-backed files then do not end up queued behind each other at the end.
_LONG_FIRST = (
    "deploy/test_federation.py",
    "runtime/test_ray_cluster.py",
    "test_simulation.py",
    "audit/test_audit.py",
    "federation/test_secure_aggregation.py",
    "privacy/test_dp_training_and_budget.py",
    "training/test_shop_training.py",
    "test_text.py",
)
_TESTS = os.path.dirname(os.path.abspath(__file__))


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        name = os.path.relpath(item.path, _TESTS).replace(os.sep, "/")
        return _LONG_FIRST.index(name) if name in _LONG_FIRST else len(_LONG_FIRST)

    items.sort(key=rank)  # stable: file order and the order inside each file are kept


# ---------------------------------------------------------------------- factories
T0 = pd.Timestamp("2011-01-01")


def _events(rows):
    df = pd.DataFrame(rows, columns=["user", "item", "day", "kind", "weight"])
    return pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(len(df))],
            "shop": "s",
            "user": df["user"],
            "item": df["item"],
            "timestamp": T0 + pd.to_timedelta(df["day"], unit="D"),
            "kind": df["kind"],
            "weight": df["weight"].astype(float),
        }
    )


def _catalog(items):
    return pd.DataFrame({"shop": "s", "item": items, "title": items, "description": "", "category": "c", "price": 1.0})


def _planted_shop(n_users=120, n_items=60, seed=0):
    """Users like one of 3 groups of items; item features reveal the group."""
    rng = np.random.default_rng(seed)
    group = np.arange(n_items) % 3
    rows, test_rows = [], []
    for u in range(n_users):
        liked = np.flatnonzero(group == u % 3)
        picks = rng.choice(liked, size=8, replace=False)
        for day, i in enumerate(picks):
            (test_rows if day >= 6 else rows).append((f"u{u}", f"i{i}", day, "purchase", 1))
    feats = np.eye(3, dtype=np.float32)[group] + 0.05 * rng.standard_normal((n_items, 3)).astype(np.float32)
    return build_shop_data("s", _events(rows), _events(test_rows), _catalog([f"i{i}" for i in range(n_items)]), feats)


def _run_fedgraph(*args, timeout=420):
    # As in CI: the virtual environment is not activated, so its bin/ is not on PATH and
    # fedgraph must find Flower's helper commands itself.
    venv_bin = os.path.dirname(sys.executable)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    env = {**os.environ, "PATH": path}
    return subprocess.run([sys.executable, "-m", "fedgraph.cli", *args], capture_output=True, text=True, timeout=timeout, env=env)


def _train_reply(update, metrics: dict, node: int):
    """A shop's reply to a train message as the server receives it: one array, ``metrics``."""
    from flwr.app import ArrayRecord, Message, Metadata, MetricRecord, RecordDict

    meta = Metadata(
        run_id=1,
        message_id=f"m{node}",
        src_node_id=node,
        dst_node_id=0,
        reply_to_message_id=f"i{node}",
        group_id="1",
        created_at=0.0,
        ttl=60.0,
        message_type="train",
    )
    return Message(content=RecordDict({"arrays": ArrayRecord([update]), "metrics": MetricRecord(metrics)}), metadata=meta)


@pytest.fixture(scope="session")
def make_events():
    """``make_events(rows)``: an events table from ``(user, item, day, kind, weight)`` tuples."""
    return _events


@pytest.fixture(scope="session")
def make_catalog():
    """``make_catalog(items)``: a catalog of ``items`` (titles = ids, one category)."""
    return _catalog


@pytest.fixture(scope="session")
def planted_shop():
    """``planted_shop(n_users=120, n_items=60, seed=0)``: a ShopData with planted 3-group interests."""
    return _planted_shop


@pytest.fixture(scope="session")
def run_fedgraph():
    """``run_fedgraph(*args, timeout=420)``: runs the ``fedgraph`` CLI in a subprocess, as CI does."""
    return _run_fedgraph


@pytest.fixture(scope="session")
def train_reply():
    """``train_reply(update, metrics, node)``: a shop's train reply as the server receives it."""
    return _train_reply

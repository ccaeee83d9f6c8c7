"""Shared test data and helpers (test files import from here, never from each other)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd

from fedgraph.shop import build_shop_data

T0 = pd.Timestamp("2011-01-01")


def events(rows):
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


def catalog(items):
    return pd.DataFrame({"shop": "s", "item": items, "title": items, "description": "", "category": "c", "price": 1.0})


def planted_shop(n_users=120, n_items=60, seed=0):
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
    return build_shop_data("s", events(rows), events(test_rows), catalog([f"i{i}" for i in range(n_items)]), feats)


def run_fedgraph(*args, timeout=420):
    # As in CI: the virtual environment is not activated, so its bin/ is not on PATH and
    # fedgraph must find Flower's helper commands itself.
    venv_bin = os.path.dirname(sys.executable)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    env = {**os.environ, "PATH": path}
    return subprocess.run([sys.executable, "-m", "fedgraph.cli", *args], capture_output=True, text=True, timeout=timeout, env=env)


def train_reply(update, metrics: dict, node: int):
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

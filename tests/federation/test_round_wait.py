"""A dead shop cannot block a round, and a round cannot start with too few shops (issue 13.1/13.3)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from flwr.app import ArrayRecord, ConfigRecord

from fedgraph.config import RunConfig
from fedgraph.federation.rounds import wait_for_shops
from fedgraph.federation.server_strategy import build_strategy


class FakeGrid:
    def __init__(self, nodes):
        self.nodes = list(nodes)

    def get_node_ids(self):
        return list(self.nodes)


@pytest.mark.parametrize("step", ["train", "evaluate"])
def test_the_strategy_asks_the_connected_shops_without_waiting_for_a_dead_one(step):
    cfg = RunConfig.load(None, ["federation.min_train_shops=1"])
    strategy = build_strategy(cfg, num_shops=2)
    grid = FakeGrid([11])  # one of two shops connected: the other was killed
    strategy._construct_messages = lambda record, node_ids, message_type: node_ids  # the shops it would ask
    out = []
    call = strategy.configure_train if step == "train" else strategy.configure_evaluate
    worker = threading.Thread(target=lambda: out.append(list(call(1, ArrayRecord(), ConfigRecord(), grid))), daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), f"configure_{step} waited for the dead shop"
    assert out[0] == [11]


def test_wait_for_shops_is_bounded_and_says_so():
    lines = []
    began = time.monotonic()
    assert wait_for_shops(FakeGrid([1]), 2, timeout=0.6, say=lines.append, every_s=0.2) == 1
    assert 0.5 < time.monotonic() - began < 3
    assert lines and "1 of 2 connected" in lines[0]


def test_wait_for_shops_returns_as_soon_as_they_connect():
    grid = FakeGrid([1])
    threading.Timer(0.3, lambda: grid.nodes.append(2)).start()
    began = time.monotonic()
    assert wait_for_shops(grid, 2, timeout=30) == 2
    assert time.monotonic() - began < 5


def test_a_round_with_fewer_connected_shops_than_min_train_shops_fails_after_the_round_timeout():
    from types import SimpleNamespace

    from fedgraph.federation.rounds import RoundFailed, _enough_connected

    cfg = RunConfig.load(None, ["federation.min_train_shops=2", "federation.round_timeout_s=0.5"])
    run = SimpleNamespace(config=cfg, round_shops=["a", "b", "c"])
    began = time.monotonic()
    with pytest.raises(RoundFailed, match=r"round 3: training: 1 shop\(s\) connected after 0 s .*min_train_shops=2.*resume the run"):
        _enough_connected(FakeGrid([5]), run, 3, "training")
    assert time.monotonic() - began < 5
    _enough_connected(FakeGrid([5, 6]), run, 3, "training")  # enough: returns at once


def test_a_restarted_server_waits_for_the_enrolled_shops_before_its_first_round(monkeypatch):
    """Issue 13.3: a resumed run started before the shops reconnected (SecAgg+ then halted)."""
    from types import SimpleNamespace

    import fedgraph.federation.rounds as rounds

    cfg = RunConfig.load(None, ["model.shop_private=none", "federation.start_wait_s=30"])
    run = SimpleNamespace(
        config=cfg,
        round_shops=["a", "b", "c"],
        read_history=lambda: {"rounds": []},
        latest_checkpoint=lambda: {"round": 2, "state_dict": {}},
        checkpoint_file=lambda r: Path(f"round-{r}.pt"),
    )
    grid = FakeGrid([])
    threading.Timer(0.5, lambda: grid.nodes.extend([1, 2, 3])).start()  # the daemons reconnect
    seen = []

    class Started(Exception):
        pass

    def first_round(*args, **kwargs):
        seen.append(len(grid.nodes))
        raise Started

    monkeypatch.setattr(rounds, "_enough_connected", first_round)
    monkeypatch.setattr(rounds, "ArrayRecord", lambda state: state)
    with pytest.raises(Started):
        rounds.run_rounds(grid, strategy=None, run=run, say=lambda line: None)
    assert seen == [3], "the first round started before every enrolled shop had reconnected"

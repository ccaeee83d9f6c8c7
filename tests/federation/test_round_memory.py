"""Issue 15.3: the server holds one pre-reduced update per wave, not one per shop (10,000 shops x
66,241 float32 = 2.65 GB held until aggregation before), and the shops' workers keep a bounded
cache of shop data (every shop a worker had ever served stayed in memory: 2.2 GB a worker)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from fedgraph.config import RunConfig
from fedgraph.federation.rounds import TrainingReplies, aggregate_in_shop_order, in_shop_order
from fedgraph.federation.server_strategy import build_strategy


def _config(*overrides: str) -> RunConfig:
    config = RunConfig()
    for item in overrides:
        config.apply_override(item)
    config.validate()
    return config


def _run(config: RunConfig, shops: int):
    return SimpleNamespace(round_shops=[f"shop{i:02d}" for i in range(shops)], config=config)


def _replies(train_reply, shops: int, *, seed: int = 3, weight: str = "num-examples"):
    rng = np.random.default_rng(seed)
    out = []
    for p in range(shops):
        update = rng.normal(size=2048).astype(np.float32)
        n = int(rng.integers(5, 900)) if weight == "num-examples" else 1.0
        out.append(train_reply(update, {weight: n, "train_loss": 0.5, "partition-id": p}, 500 + 13 * p))
    return out


def _folded(config, replies, wave: int, *, arrival=None):
    strategy = build_strategy(config, num_shops=len(replies))
    collected = TrainingReplies(_run(config, len(replies)), {"rounds": []}, strategy)
    for start in range(0, len(replies), wave):
        got = replies[start : start + wave]
        collected.add(arrival(got) if arrival else got)
    arrays, _ = aggregate_in_shop_order(strategy, 1, collected.updates)
    return collected, arrays.to_numpy_ndarrays()[0]


def test_the_server_keeps_one_update_per_wave_and_the_same_weighted_mean(train_reply):
    config = RunConfig()
    replies = _replies(train_reply, 10)
    collected, mean = _folded(config, replies, wave=3)
    assert len(collected.updates) == 4  # waves of 3, 3, 3, 1: four arrays held, not ten
    assert sorted(collected.train) == [f"shop{i:02d}" for i in range(10)]  # every shop's own figures kept
    assert collected.train["shop04"]["num-examples"] == float(replies[4].content["metrics"]["num-examples"])
    plain = build_strategy(config, num_shops=10).aggregate_train(1, replies)[0].to_numpy_ndarrays()[0]
    np.testing.assert_allclose(mean, plain, rtol=1e-5, atol=1e-7)

    # The arrival order inside a wave does not change a bit.
    _, shuffled = _folded(config, replies, wave=3, arrival=lambda got: got[::-1])
    assert np.array_equal(mean, shuffled)


def test_one_wave_gives_bit_for_bit_the_unfolded_aggregate(train_reply):
    config = RunConfig()
    replies = _replies(train_reply, 6)
    _, mean = _folded(config, replies, wave=64)
    plain = aggregate_in_shop_order(build_strategy(config, num_shops=6), 1, replies)[0].to_numpy_ndarrays()[0]
    assert np.array_equal(mean, plain)


def test_a_server_optimiser_steps_once_per_round_not_once_per_wave(train_reply):
    config = _config("federation.strategy=fedadam")
    replies = _replies(train_reply, 7)

    def fedadam(updates):
        strategy = build_strategy(config, num_shops=7)
        key = next(iter(replies[0].content["arrays"].keys()))
        strategy.current_arrays = {key: np.zeros(2048, dtype=np.float32)}  # what configure_train sets
        return strategy, aggregate_in_shop_order(strategy, 1, updates)[0].to_numpy_ndarrays()[0]

    strategy, plain = fedadam(replies)
    collected = TrainingReplies(_run(config, 7), {"rounds": []}, strategy)
    for start in range(0, 7, 2):
        collected.add(replies[start : start + 2])
    _, folded = fedadam(collected.updates)
    np.testing.assert_allclose(folded, plain, rtol=1e-5, atol=1e-6)


def test_client_level_dp_clips_every_shop_so_nothing_is_folded(train_reply):
    config = _config("privacy.client_dp=fixed", "privacy.client_clipping_norm=1.0")
    replies = _replies(train_reply, 5)
    collected = TrainingReplies(_run(config, 5), {"rounds": []}, build_strategy(config, num_shops=5))
    collected.add(replies[:2])
    collected.add(replies[2:])
    assert len(collected.updates) == 5


def test_failed_exhausted_and_regressed_shops_are_kept_out_of_the_fold(train_reply):
    from flwr.app import Error, Message

    config = _config("privacy.enabled=true")
    replies = _replies(train_reply, 4, weight="shop-weight")
    exhausted = train_reply(np.zeros(2048, np.float32), {"shop-weight": 1.0, "budget-exhausted": 1, "partition-id": 1, "epsilon": 8.0}, 1)
    regressed = train_reply(np.ones(2048, np.float32), {"shop-weight": 1.0, "ledger-seq": 1, "epsilon": 1.0, "partition-id": 2}, 2)
    failed = Message(Error(code=0, reason="shop03 could not train"), reply_to=replies[3])
    history = {"rounds": [{"round": 1, "train": {"shop02": {"ledger-seq": 4, "epsilon": 2.0}}}]}
    strategy = build_strategy(config, num_shops=4)
    collected = TrainingReplies(_run(config, 4), history, strategy)
    collected.add([replies[0], exhausted])
    collected.add([regressed, failed])
    assert list(collected.train) == ["shop00"]
    assert list(collected.exhausted) == ["shop01"]
    assert any("shop02" in f and "ledger went backwards" in f for f in collected.failures)
    assert any("could not train" in f for f in collected.failures)
    assert len(collected.updates) == 1


def test_messages_go_out_in_the_order_the_simulation_engine_registered_the_shops():
    """Waves must hold the same shops in every run (so a multi-wave sum is repeatable): Flower's
    simulation engine registers node ``i`` for partition ``i`` in order, with random node ids."""
    from flwr.server.superlink.fleet.vce.vce_api import _register_nodes
    from flwr.server.superlink.linkstate import LinkStateFactory
    from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME
    from flwr.supercore.object_store import ObjectStoreFactory
    from flwr.superlink.federation import NoOpFederationManager

    factory = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory())  # as run_simulation does
    mapping = _register_nodes(9, factory)  # node id -> partition id, as the engine builds it
    state = factory.state()
    messages = [SimpleNamespace(metadata=SimpleNamespace(dst_node_id=node)) for node in sorted(mapping)]  # any order
    ordered = in_shop_order(SimpleNamespace(state=state), messages)
    assert [mapping[m.metadata.dst_node_id] for m in ordered] == list(range(9))
    # A deployment's grid has no such state: the order is left as it is.
    assert in_shop_order(SimpleNamespace(), messages) == messages


@pytest.mark.parametrize(("budget_mb", "loads", "kept"), [(0.0, 16, 0), (1.0, 14, 2), (10_000.0, 8, 8)])
def test_a_workers_shop_cache_stays_within_its_budget(tmp_path, budget_mb, loads, kept, monkeypatch):
    """A round asks every shop once, in a cycle: the cache keeps the first shops that fit and
    reads the others from disk each time (an LRU cache would evict each shop just before its turn)."""
    from fedgraph.federation import shop_side

    loaded = []
    fake = {f"s{i}": SimpleNamespace(nbytes=400_000, shop=f"s{i}") for i in range(8)}

    def load(path):
        loaded.append(path.stem)
        return fake[path.stem]

    monkeypatch.setattr(shop_side.ShopData, "load", staticmethod(load))
    monkeypatch.setattr(shop_side, "_SHOPS", shop_side.ShopCache())
    run = SimpleNamespace(
        round_shops=list(fake),
        shop_file=lambda name: tmp_path / f"{name}.npz",
        config=_config(f"federation.shop_cache_mb={budget_mb}"),
    )
    for _ in range(2):  # two rounds over every shop
        for p in range(8):
            assert shop_side.shop_data(run, p) is fake[f"s{p}"]
    cache = shop_side._SHOPS
    assert cache.nbytes <= budget_mb * 2**20
    assert len(loaded) == loads and len(cache) == kept


def test_a_workers_every_message_does_not_reparse_the_runs_shop_index(tmp_path, monkeypatch):
    """Profile of 10,000 shops (simulations/RESULTS.md): a Ray worker spent 23 % of its time
    parsing shops/index.json (every shop's summary) once per message, O(shops) per shop."""
    import json

    from fedgraph.federation import run_dir as module
    from fedgraph.federation.run_dir import RunDir

    index = tmp_path / "shops" / "index.json"
    index.parent.mkdir()
    index.write_text(json.dumps({"shops": ["a", "b"], "round_shops": ["a", "b"]}))
    parsed = []
    real = module.json.loads
    monkeypatch.setattr(module.json, "loads", lambda text, *a, **k: parsed.append(1) or real(text, *a, **k))
    for _ in range(5):  # one RunDir per message, as the ClientApp makes
        assert RunDir.at(tmp_path).round_shops == ["a", "b"]
    assert len(parsed) == 1
    # Rewritten (atomically, as prepare and the shop daemon write it): read again.
    fresh = index.with_suffix(".tmp")
    fresh.write_text(json.dumps({"shops": ["a", "b", "c"], "round_shops": ["c"]}))
    fresh.replace(index)
    assert RunDir.at(tmp_path).round_shops == ["c"] and len(parsed) == 2


def test_folding_keeps_flowers_check_of_the_replies_and_a_wave_of_zero_weight_adds_nothing(train_reply):
    """Review of 15.3: the fold called Flower's averaging directly, so replies with other array
    keys were averaged silently (Flower refuses them), and a wave whose shops all weigh 0 divided by 0."""
    from flwr.app import Array, ArrayRecord, Message, RecordDict
    from flwr.serverapp.exception import InconsistentMessageReplies

    config = RunConfig()
    replies = _replies(train_reply, 3)
    odd = replies[2]
    arrays = dict(odd.content["arrays"].items()) | {"extra": Array(np.ones(2, np.float32))}
    replies[2] = Message(RecordDict({"arrays": ArrayRecord(arrays), "metrics": odd.content["metrics"]}), metadata=odd.metadata)
    collected = TrainingReplies(_run(config, 3), {"rounds": []}, build_strategy(config, num_shops=3))
    with pytest.raises(InconsistentMessageReplies):
        collected.add(replies)

    empty = [train_reply(np.ones(2048, np.float32), {"num-examples": 0, "partition-id": p}, 900 + p) for p in range(2)]
    collected = TrainingReplies(_run(config, 4), {"rounds": []}, build_strategy(config, num_shops=4))
    collected.add(empty)
    collected.add(_replies(train_reply, 4)[2:])
    assert len(collected.updates) == 1 and len(collected.train) == 4  # the zero-weight shops' figures are still kept

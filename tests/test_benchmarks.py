"""The performance changes made for the benchmarks keep results identical, and the benchmarks start."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_prepare_per_shop_grouping_gives_the_same_shops(tmp_path, monkeypatch):
    """prepare() hands build_shop_data each shop's own events; the files equal the full-frame ones."""
    from fedgraph.config import RunConfig
    from fedgraph.data.split import temporal_split
    from fedgraph.features import item_features
    from fedgraph.features.encoders import ENCODERS, EncoderSpec
    from fedgraph.federation.run_dir import RunDir
    from fedgraph.shop import ShopData, build_shop_data
    from fedgraph.simulation import load_dataset, prepare

    def fake_embed(catalog, embedder=None):  # no MiniLM here: any fixed vectors do
        rng = np.random.default_rng(len(catalog))
        v = rng.standard_normal((len(catalog), 384)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    class FakeEncoder:
        dim = 384
        stats = type("Stats", (), {"hits": 0, "embedded": 0, "model_loads": 0})()

        def encode(self, texts):
            return fake_embed(texts)

    fake = EncoderSpec("minilm", lambda config, progress: FakeEncoder(), lambda config: {"fingerprint": "fake", "dim": 384})
    monkeypatch.setitem(ENCODERS, "minilm", fake)
    config = RunConfig.load(
        overrides=[
            "data.source=synthetic",
            "data.synthetic_shops=6",
            "data.synthetic_users_per_shop=[20,80]",
            f"features.cache_dir='{tmp_path / 'cache'}'",
        ]
    )
    config.save(tmp_path / "config.toml")
    run = RunDir.at(tmp_path)
    shops = prepare(config, run, say=lambda _: None)

    dataset = load_dataset(config)
    d = config.data
    train, test = temporal_split(dataset.events, test_fraction=d.test_fraction, min_user_items=d.min_user_items)
    fit, val = temporal_split(train, test_fraction=d.test_fraction, min_user_items=d.min_user_items)  # validation inside training
    catalog = dataset.catalog.reset_index(drop=True)
    text = fake_embed(catalog)
    for shop in shops:
        rows = np.flatnonzero(catalog["shop"].to_numpy() == shop)
        feats = item_features(
            text[rows], catalog.iloc[rows]["price"].to_numpy(), neighbours=config.features.neighbours, hops=config.features.hops
        )
        for path, (history, held_out) in ((run.shop_file(shop), (fit, val)), (run.final_shop_file(shop), (train, test))):
            want = build_shop_data(
                shop, history, held_out, catalog.iloc[rows], feats, recency_halflife_days=config.model.recency_halflife_days
            )
            got = ShopData.load(path)
            for name, value in want.__dict__.items():
                if isinstance(value, np.ndarray):
                    np.testing.assert_array_equal(getattr(got, name), value, err_msg=f"{path.name}.{name}")
            assert got.meta == {**want.meta, "text_dim": 384}


@pytest.mark.parametrize(
    "name",
    [
        "bench_rounds",
        "bench_local_training",
        "bench_text_embedding",
        "bench_graph_rebuild",
        "bench_quality",
        "bench_ease",
        "join_or_not",
        "compare_blends",
    ],
)
def test_benchmark_help(name):
    out = subprocess.run([sys.executable, str(ROOT / "simulations" / f"{name}.py"), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout


class _RecordingGrid:
    """A stand-in for Flower's Grid: answers each message with itself, after ``delay_s``."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.calls: list[tuple[list, float]] = []
        self.delay_s = delay_s

    def send_and_receive(self, messages, *, timeout):
        import time

        self.calls.append((list(messages), timeout))
        time.sleep(self.delay_s)
        return list(messages)


def test_shops_are_asked_in_waves_sharing_the_round_timeout():
    from fedgraph.federation.rounds import send_in_waves

    grid = _RecordingGrid()
    replies = send_in_waves(grid, iter(range(7)), timeout=60.0, wave=3)
    assert replies == list(range(7))  # every shop answered, in order
    assert [c[0] for c in grid.calls] == [[0, 1, 2], [3, 4, 5], [6]]
    assert all(0 < c[1] <= 60.0 for c in grid.calls) and grid.calls[-1][1] < 60.0

    grid = _RecordingGrid()
    assert send_in_waves(grid, range(7), timeout=60.0, wave=0) == list(range(7))
    assert [c[0] for c in grid.calls] == [list(range(7))]  # 0: everyone at once (deployments)

    slow = _RecordingGrid(delay_s=0.2)
    replies = send_in_waves(slow, range(7), timeout=0.1, wave=3)
    assert replies == [0, 1, 2] and len(slow.calls) == 1  # later waves are not sent after the deadline

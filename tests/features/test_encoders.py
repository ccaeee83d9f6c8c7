"""Text encoders are a registry (issue 17.2): the width and fingerprint come from the encoder,
are recorded in the run directory and are part of the model signature shops and server compare."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest

from fedgraph.config import ConfigError, RunConfig
from fedgraph.federation.run_dir import RunDir
from fedgraph.shop import ShopData

WIDTH = 12


@dataclass
class _Stats:
    hits: int = 0
    embedded: int = 0
    model_loads: int = 0


@dataclass
class _HashEncoder:
    """Each word hashed to a signed unit vector of width WIDTH; the text's vector is their normalised sum."""

    dim: int = WIDTH
    stats: _Stats = field(default_factory=_Stats)

    def encode(self, texts):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                h = hashlib.sha256(word.encode()).digest()
                out[row, h[0] % self.dim] += 1.0 if h[1] % 2 else -1.0
            out[row, 0] += 1e-3
        self.stats.embedded += len(texts)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture
def hash_encoder():
    from fedgraph.features import encoders

    spec = encoders.EncoderSpec(
        name="test-hash",
        build=lambda config, progress: _HashEncoder(),
        identity=lambda config: {"fingerprint": "sha256-words", "dim": WIDTH},
        description="hashed words (tests only)",
    )
    encoders.register(spec)
    yield spec
    del encoders.ENCODERS["test-hash"]


def _dataset():
    from fedgraph.simulation import Dataset

    words = ["red mug", "blue bowl", "green plate", "oak chair", "pine table", "wool rug", "glass vase", "wax candle"]
    catalog = pd.DataFrame(
        {"shop": "s", "item": [f"i{k}" for k in range(8)], "title": words, "description": "", "category": "home", "price": 2.0}
    )
    events = pd.DataFrame(
        [
            {
                "event_id": f"{u}-{j}",
                "shop": "s",
                "user": f"u{u}",
                "item": f"i{(u + j) % 8}",
                "timestamp": pd.Timestamp("2011-01-01") + pd.Timedelta(days=j),
                "kind": "purchase",
                "weight": 1.0,
            }
            for u in range(10)
            for j in range(7)
        ]
    )
    return Dataset(events, catalog, {"source": "test"})


def test_the_configured_encoder_sets_the_feature_width_the_model_and_the_content_baseline(tmp_path, hash_encoder):
    from fedgraph.evaluation import evaluate_content
    from fedgraph.simulation import prepare

    config = RunConfig.load(None, ["features.text_encoder=test-hash", "federation.min_train_shops=1"])
    config.save(tmp_path / "config.toml")
    run = RunDir.at(tmp_path)
    prepare(config, run, lambda line: None, dataset=_dataset())

    assert run.index["text_encoder"] == {"name": "test-hash", "fingerprint": "sha256-words", "dim": WIDTH}
    assert run.index["feature_size"] == 2 * WIDTH + 1
    data = ShopData.load(run.shop_file("s"))
    assert data.item_features.shape == (8, 2 * WIDTH + 1) and data.text_dim == WIDTH
    model = run.new_model()
    assert model.content_dim == WIDTH
    figures = evaluate_content(data, k=5)
    assert figures["users"] > 0 and 0.0 <= figures["ndcg@5"] <= 1.0


def test_the_model_signature_names_the_encoder(hash_encoder):
    from fedgraph.deploy.shop_state import model_signature

    minilm = RunConfig.load(None, [])
    hashed = RunConfig.load(None, ["features.text_encoder=test-hash"])
    assert model_signature(minilm) != model_signature(hashed)
    assert '"name": "test-hash"' in model_signature(hashed) and f'"dim": {WIDTH}' in model_signature(hashed)
    assert '"name": "minilm"' in model_signature(minilm) and '"dim": 384' in model_signature(minilm)


def test_an_unknown_encoder_is_refused_with_the_known_names():
    with pytest.raises(ConfigError, match=r"features.text_encoder must be one of .*minilm"):
        RunConfig.load(None, ["features.text_encoder=word2vec"])

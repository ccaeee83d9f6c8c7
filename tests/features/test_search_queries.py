"""Issue 14.4: search queries feed each user's text profile, only from before the period predicted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from fedgraph.config import RunConfig
from fedgraph.features import pipeline
from fedgraph.models.interest_model import InterestModel, text_profile
from fedgraph.shop import ShopData, build_shop_data
from fedgraph.training.rows import RowSampler


def _searches(rows):
    return pd.DataFrame(
        {
            "event_id": [f"q{i}" for i in range(len(rows))],
            "shop": [r[0] for r in rows],
            "user": [r[1] for r in rows],
            "timestamp": (pd.Timestamp("2011-01-01") + pd.to_timedelta([r[2] for r in rows], unit="D")).astype(
                "datetime64[s]"
            ),  # day r[2] as make_events counts
            "query": [r[3] for r in rows],
        }
    )


def test_a_view_uses_only_the_searches_made_before_its_users_held_out_period(make_events):
    held_out = make_events([("u1", "i3", 10, "purchase", 1.0), ("u1", "i4", 12, "purchase", 1.0)])
    searches = _searches([("s", "u1", 9, "a"), ("s", "u1", 10, "b"), ("s", "u1", 20, "c"), ("s", "u2", 30, "d")])
    assert pipeline.before_held_out(searches, held_out).tolist() == [True, False, False, True]  # u2 holds nothing out
    earlier = make_events([("u2", "i1", 25, "view", 1.0)])
    assert pipeline.before_held_out(searches, held_out, earlier).tolist() == [True, False, False, False]


def _shop(make_events, make_catalog, searches, vectors, most=16):
    events = make_events([("u1", "i1", 1, "purchase", 1.0), ("u1", "i2", 2, "view", 1.0), ("u2", "i2", 3, "view", 1.0)])
    events["shop"] = "s"
    catalog = make_catalog(["i1", "i2", "i3"])
    catalog["shop"] = "s"
    feats = np.eye(3, 8, dtype=np.float32)
    return build_shop_data("s", events, events.iloc[:0], catalog, feats, searches=searches, search_vectors=vectors, max_queries=most)


def test_each_user_keeps_its_latest_queries_oldest_first_and_they_survive_save_and_erasure(tmp_path, make_events, make_catalog):
    searches = _searches(
        [("s", "u1", 5, "late"), ("s", "u1", 1, "early"), ("s", "u1", 3, "mid"), ("s", "u9", 2, "no events"), ("x", "u2", 1, "other shop")]
    )
    vectors = np.arange(5 * 8, dtype=np.float32).reshape(5, 8)
    data = _shop(make_events, make_catalog, searches, vectors, most=2)
    u1, u2 = list(data.users).index("u1"), list(data.users).index("u2")
    np.testing.assert_array_equal(data.queries(u1), vectors[[2, 0]])  # mid, late: the latest two, oldest first
    assert len(data.queries(u2)) == 0  # another shop's user of the same id gets nothing
    data.save(tmp_path / "s.npz")
    again = ShopData.load(tmp_path / "s.npz")
    np.testing.assert_array_equal(again.queries(list(again.users).index("u1")), vectors[[2, 0]])
    gone = again.without_user("u1")
    assert len(gone.query_text) == 0 and gone.query_indptr.tolist() == [0, 0]


def test_a_shop_file_written_before_searches_existed_loads_with_none(tmp_path, make_events, make_catalog):
    data = _shop(make_events, make_catalog, None, None)
    old = {k: v for k, v in data.__dict__.items() if k not in ("shop", "meta", "query_indptr", "query_text")}
    np.savez(tmp_path / "old.npz", shop=np.array("s"), meta=np.array(repr(data.meta)), **old)
    loaded = ShopData.load(tmp_path / "old.npz")
    assert loaded.query_indptr.tolist() == [0] * (loaded.num_users + 1) and len(loaded.query_text) == 0


def test_queries_move_the_text_profile_and_rows_hold_only_their_own_users_queries(make_events, make_catalog):
    searches = _searches([("s", "u1", 1, "x"), ("s", "u2", 1, "y"), ("s", "u2", 2, "z")])
    vectors = np.zeros((3, 8), dtype=np.float32)
    vectors[0, 2] = vectors[1, 3] = vectors[2, 4] = 1.0
    data = _shop(make_events, make_catalog, searches, vectors)
    u1, u2 = list(data.users).index("u1"), list(data.users).index("u2")
    batch = RowSampler(data, history=4, positives=1, negatives=2).encoding_batch(np.array([u1, u2]))
    assert batch.query_mask.tolist() == [[True, False], [True, True]]
    np.testing.assert_array_equal(batch.queries[0, 0].numpy(), vectors[0])
    text = torch.from_numpy(data.item_features)[batch.history]
    plain = text_profile(text, batch.history_mask)
    searched = text_profile(text, batch.history_mask, batch.queries, batch.query_mask)
    assert float(searched[0, 2]) > 0 and float(plain[0, 2]) == 0  # u1's query direction joins its profile
    assert float(searched[0, 3]) == 0 and float(searched[0, 4]) == 0  # and u2's do not
    # No queries at all: the batch and the profile are what they were.
    bare = RowSampler(_shop(make_events, make_catalog, None, None), history=4, positives=1, negatives=2).encoding_batch(np.array([u1]))
    assert bare.queries is None


def test_the_model_scores_with_queries_in_training_and_serving_alike(make_events, make_catalog):
    searches = _searches([("s", "u1", 1, "x")])
    vectors = np.zeros((1, 8), dtype=np.float32)
    vectors[0, 2] = 1.0
    data = _shop(make_events, make_catalog, searches, vectors)
    model = InterestModel(8, dim=4, hidden=4, content_dim=8)
    sampler = RowSampler(data, history=4, positives=1, negatives=2)
    u1 = list(data.users).index("u1")
    batch = sampler.training_batch(np.array([u1]), np.random.default_rng(0))
    feats = torch.from_numpy(data.item_features)
    _, pos, _ = model(batch, feats)
    items = model.item_embeddings(feats, torch.arange(3))
    user = model.user_embeddings_from(items[batch.history], batch.history_attr, batch.history_mask, batch.queries, batch.query_mask)
    served = model.score(user, items[batch.positives])
    torch.testing.assert_close(pos, served, rtol=1e-5, atol=1e-5)
    without = model.user_embeddings_from(items[batch.history], batch.history_attr, batch.history_mask)
    assert not torch.allclose(user, without)


def test_queries_are_embedded_without_touching_the_text_cache(tmp_path):
    config = RunConfig()
    config.features.cache_dir = str(tmp_path / "cache")
    searches = _searches([("s", "u1", 1, "garden decoration")])
    vectors = pipeline.query_vectors(searches, config, progress=False)
    assert vectors.shape == (1, 384) and abs(float(np.linalg.norm(vectors[0])) - 1.0) < 1e-4
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(b"garden" in p.read_bytes() for p in cache.rglob("*") if p.is_file())
    from fedgraph.text import TextEmbedder

    embedder = TextEmbedder(cache_dir=cache, progress=False)
    embedder.encode(["a catalog title"])
    assert embedder.stats.embedded == 1
    embedder.encode(["garden decoration"])  # not served from a cache: it was never written
    assert embedder.stats.hits == 0 and embedder.stats.embedded == 2


def test_a_customers_queries_pull_their_interests_in_the_graph_toward_what_they_searched(make_events, make_catalog):
    """A customer who bought kitchen items and searched for garden items: with the queries the
    garden interest's weight in the interest graph goes up (interests come from the same user
    embedding the queries enter)."""
    from fedgraph.evaluation import item_embeddings, user_embeddings
    from fedgraph.graph import build_interest_graph

    events = make_events([("u1", "i1", 1, "purchase", 1.0), ("u1", "i2", 2, "purchase", 1.0)])
    catalog = make_catalog(["i1", "i2", "i3", "i4"]).assign(category=["kitchen", "kitchen", "garden", "garden"])
    feats = np.zeros((4, 8), dtype=np.float32)
    feats[[0, 1], 0] = 1.0  # kitchen text direction
    feats[[2, 3], 1] = 1.0  # garden text direction
    garden = np.zeros((3, 8), dtype=np.float32)
    garden[:, 1] = 1.0
    searches = _searches([("s", "u1", 1, "rose"), ("s", "u1", 2, "rake"), ("s", "u1", 3, "hose")])
    torch.manual_seed(0)
    model = InterestModel(8, dim=4, hidden=4, content_dim=8)
    model.eval()

    def garden_weight(vectors):
        data = build_shop_data(
            "s", events, events.iloc[:0], catalog, feats, searches=searches if vectors is not None else None, search_vectors=vectors
        )
        items = item_embeddings(model, data)
        users = user_embeddings(model, data, np.arange(data.num_users), history=8, items=items)
        graph = build_interest_graph(
            "s",
            list(data.users),
            users.numpy(),
            list(data.items),
            items[:, :-1].numpy(),
            list(data.items),
            list(data.item_categories),
            top_k_interests=2,
        )
        interests = graph.interests
        return {interests[int(r["interest_idx"])]: float(r["weight"]) for r in graph.user_interest}.get("garden", 0.0)

    assert garden_weight(garden) > garden_weight(None) + 0.2


def test_a_training_row_sees_only_the_searches_typed_before_the_first_item_it_predicts(make_events, make_catalog):
    """Review of 14.4: a row that predicts the items after a cut of the timeline had every query
    of the user in its text profile, later ones included."""
    events = make_events([("u1", f"i{k}", 10 * k, "purchase", 1.0) for k in range(1, 7)])
    catalog = make_catalog([f"i{k}" for k in range(1, 7)])
    feats = np.eye(6, 8, dtype=np.float32)
    searches = _searches([("s", "u1", 5, "early"), ("s", "u1", 35, "middle"), ("s", "u1", 65, "late")])
    vectors = np.eye(3, 8, k=5, dtype=np.float32)
    data = build_shop_data("s", events, events.iloc[:0], catalog, feats, searches=searches, search_vectors=vectors)
    assert data.query_pos.tolist() == [0, 3, 6]  # items at days 10..60: none, three, six before each query
    sampler = RowSampler(data, history=8, positives=1, negatives=2)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        batch = sampler.training_batch(np.array([0]), rng)
        history = int(batch.history_mask.sum())  # = the cut: items before it
        shown = int(batch.query_mask.sum())
        assert shown == sum(p <= history for p in (0, 3, 6)), (history, shown)
    # Encoding (evaluation, serving) takes every stored query: all precede the held-out period.
    assert int(sampler.encoding_batch(np.array([0])).query_mask.sum()) == 3


def test_only_each_customers_latest_allowed_queries_are_embedded():
    searches = _searches([("s", "u1", d, f"q{d}") for d in (1, 5, 3, 9)] + [("s", "u2", 2, "x"), ("t", "u1", 4, "other shop")])
    allowed = np.array([True, True, True, False, True, True])
    rows = pipeline.latest_queries(searches, allowed, 2)
    assert sorted(searches["query"].iloc[rows]) == ["other shop", "q3", "q5", "x"]  # q9 not allowed, q1 older than the latest two

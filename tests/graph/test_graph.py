"""Interest graph: builder, SQLite store, exports."""

from __future__ import annotations

import csv
import json
import sqlite3

import networkx as nx
import numpy as np
import pytest

from fedgraph.graph import (
    NEO4J_FILES,
    GraphLookupError,
    GraphStore,
    GraphStoreError,
    build_interest_graph,
    export_graphml,
    export_neo4j,
    to_hetero_data,
)
from fedgraph.graph import store as store_mod

# Hand-built 4-d embeddings whose answers can be worked out on paper.
ITEMS = ["A1", "A2", "B1", "B2", "C1", "C2"]
ITEM_EMB = np.array(
    [
        [1.0, 0.0, 0.0, 0.0],  # A1
        [0.9, 0.1, 0.0, 0.0],  # A2  (cos(A1, A2) = 0.994)
        [0.0, 1.0, 0.0, 0.0],  # B1
        [0.1, 0.8, 0.0, 0.0],  # B2  (cos(B1, B2) = 0.992)
        [0.0, 0.0, 1.0, 0.0],  # C1
        [0.0, 0.0, 0.7, 0.3],  # C2  (cos(C1, C2) = 0.919)
    ],
    dtype=np.float32,
)
TITLES = ["Headphones", 'Speaker, "bass" edition', "Novel", "Poems\nvol. 2", "Pan", "Wok"]
CATEGORIES = ["audio", "audio", "books", "books", "cooking", "cooking"]
USERS = ["alice", "bob", "carol"]
USER_EMB = np.array(
    [
        [1.0, 0.2, 0.0, 0.0],  # alice: A1 1.0, A2 0.92, B2 0.26, B1 0.2, C* 0
        [0.0, 0.0, 1.0, 0.1],  # bob:   C1 1.0, C2 0.73, the rest 0
        [0.2, 1.0, 0.0, 0.0],  # carol: B1 1.0, B2 0.82, A2 0.28, A1 0.2
    ],
    dtype=np.float32,
)


def build(shop="fr", *, model_version="v1", round=3, users=USERS, user_emb=USER_EMB, **kw):
    kw.setdefault("top_k_items", 3)
    kw.setdefault("top_k_interests", 2)
    kw.setdefault("top_k_neighbours", 2)
    graph = build_interest_graph(shop, users, user_emb, ITEMS, ITEM_EMB, TITLES, CATEGORIES, model_version=model_version, round=round, **kw)
    graph.event_offset = f"events@{round}"
    return graph


def recs_of(graph, user):
    ui = graph.user_item[graph.user_item["user_idx"] == graph.users.index(user)]
    return [graph.items[i] for i in ui["item_idx"]], ui


# --- builder --------------------------------------------------------------------------------


def test_recommendations_neighbours_and_interests_match_hand_computed():
    g = build()
    assert g.interests == ["audio", "books", "cooking"]
    items, rows = recs_of(g, "alice")
    assert items == ["A1", "A2", "B2"]
    np.testing.assert_allclose(rows["score"], [1.0, 0.92, 0.26], rtol=1e-5)
    assert rows["rank"].tolist() == [1, 2, 3]
    assert recs_of(g, "carol")[0] == ["B1", "B2", "A2"]
    assert recs_of(g, "bob")[0][:2] == ["C1", "C2"]

    nb = {g.items[s]: [] for s in g.item_item["src_idx"]}
    for s, d in zip(g.item_item["src_idx"], g.item_item["dst_idx"]):
        nb[g.items[s]].append(g.items[d])
    assert nb["A1"] == ["A2", "B2"] and nb["B1"] == ["B2", "A2"] and nb["C1"][0] == "C2"
    assert all(g.item_item["src_idx"] != g.item_item["dst_idx"])  # no self loops
    assert len(g.item_item) == 6 * 2

    # user -> interest: softmax(cos(user, normalised mean item embedding) / 0.1) over interests.
    means = np.stack([ITEM_EMB[[c == k for c in CATEGORIES]].mean(0) for k in g.interests])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    for u, emb in zip(USERS, USER_EMB):
        logits = means @ (emb / np.linalg.norm(emb)) / 0.1
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        rows = g.user_interest[g.user_interest["user_idx"] == USERS.index(u)]
        expected = np.argsort(-probs)[:2]
        assert rows["interest_idx"].tolist() == expected.tolist()
        np.testing.assert_allclose(rows["weight"], probs[expected], rtol=1e-4)
    top = {u: g.interests[g.user_interest["interest_idx"][i * 2]] for i, u in enumerate(USERS)}
    assert top == {"alice": "audio", "bob": "cooking", "carol": "books"}


def test_exclusion_and_short_lists():
    exclude = [np.array([0]), np.array([], dtype=np.int64), np.array([2, 3, 0, 1, 5])]
    g = build(exclude=exclude)
    assert recs_of(g, "alice")[0] == ["A2", "B2", "B1"]
    carol, rows = recs_of(g, "carol")  # only C1 left
    assert carol == ["C1"] and rows["rank"].tolist() == [1]
    g_all = build(exclude=[np.arange(6)] * 3)
    assert len(g_all.user_item) == 0
    with pytest.raises(ValueError, match="outside"):
        build(exclude=[np.array([6]), np.array([]), np.array([])])
    with pytest.raises(ValueError, match="one entry per user"):
        build(exclude=[np.array([0])])


def test_input_validation():
    with pytest.raises(ValueError, match="dim"):
        build(user_emb=USER_EMB[:, :3])
    with pytest.raises(ValueError, match="unique"):
        build(users=["a", "a", "b"])
    bad = USER_EMB.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        build(user_emb=bad)


def test_chunked_equals_unchunked_and_brute_force():
    rng = np.random.default_rng(7)
    n_users, n_items, d = 300, 80, 16
    users = [f"u{i}" for i in range(n_users)]
    items = [f"i{i}" for i in range(n_items)]
    U = rng.standard_normal((n_users, d)).astype(np.float32)
    I = rng.standard_normal((n_items, d)).astype(np.float32)
    cats = [f"c{i % 7}" for i in range(n_items)]
    exclude = [rng.choice(n_items, size=rng.integers(0, 10), replace=False) for _ in range(n_users)]
    args = ("s", users, U, items, I, items, cats)
    kw = dict(exclude=exclude, top_k_items=10, top_k_interests=3, top_k_neighbours=5)
    small = build_interest_graph(*args, batch_size=7, **kw)
    big = build_interest_graph(*args, batch_size=100_000, **kw)
    for name in ("user_item", "user_interest", "item_item"):
        a, b = getattr(small, name), getattr(big, name)
        for field in a.dtype.names:
            if a.dtype[field].kind == "f":
                np.testing.assert_allclose(a[field], b[field], rtol=1e-5, atol=1e-6)
            else:
                np.testing.assert_array_equal(a[field], b[field])

    scores = U @ I.T
    for u in range(n_users):
        scores[u, exclude[u]] = -np.inf
    expected = np.argsort(-scores, axis=1)[:, :10]
    np.testing.assert_array_equal(small.user_item["item_idx"].reshape(n_users, 10), expected)
    In = I / np.linalg.norm(I, axis=1, keepdims=True)
    sims = In @ In.T
    np.fill_diagonal(sims, -np.inf)
    np.testing.assert_array_equal(small.item_item["dst_idx"].reshape(n_items, 5), np.argsort(-sims, axis=1)[:, :5])


def test_to_hetero_data():
    g = build()
    data = to_hetero_data(g)
    assert data["user"].num_nodes == 3 and data["item"].num_nodes == 6
    assert data["interest"].num_nodes == 3
    rec = data["user", "recommended", "item"]
    assert rec.edge_index.shape == (2, len(g.user_item))
    assert rec.edge_attr.shape == (len(g.user_item), 1)
    assert rec.edge_index.max().item() < 6
    assert data["item", "similar_to", "item"].edge_index.shape == (2, 12)
    assert data["user", "interested_in", "interest"].edge_weight.shape == (6,)


# --- store ----------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    with GraphStore(tmp_path / "graphs.sqlite") as s:
        yield s


def test_write_and_read_back(store):
    g = build()
    summary = store.write(g)
    assert store.shops() == ["fr"]
    assert (summary.n_users, summary.n_items, summary.n_interests) == (3, 6, 3)
    assert (summary.n_user_item, summary.n_user_interest, summary.n_item_item) == (9, 6, 12)
    assert (summary.model_version, summary.round, summary.event_offset) == ("v1", 3, "events@3")
    assert json.loads(json.dumps(summary))["n_user_item"] == 9  # a plain dict, fit for reports
    assert store.summary("fr") == summary and summary["is_current"] is True

    recs = store.user_recommendations("fr", "alice")
    assert [r.item for r in recs] == ["A1", "A2", "B2"]
    assert [r.rank for r in recs] == [1, 2, 3]
    assert recs[1].title == 'Speaker, "bass" edition' and recs[1].category == "audio"
    assert recs[0].score == pytest.approx(1.0) and recs[0].model_version == "v1"
    assert [r.item for r in store.user_recommendations("fr", "alice", k=1)] == ["A1"]
    interests = store.user_interests("fr", "carol")
    assert interests[0].interest == "books" and interests[0].weight >= interests[1].weight
    nbs = store.item_neighbours("fr", "B1")
    assert [n.item for n in nbs] == ["B2", "A2"] and nbs[0].title == "Poems\nvol. 2"

    back = store.read_graph("fr")
    assert back.users == sorted(USERS) and back.items == sorted(ITEMS)
    assert len(back.user_item) == 9 and back.event_offset == "events@3"
    assert back.user_item["score"].max() == pytest.approx(1.0)


def test_bulk_write_round_trips_exactly(store):
    rng = np.random.default_rng(3)
    n = 1234  # not a multiple of the rows per INSERT statement
    users = [f"user-{i}" for i in rng.permutation(n)]
    g = build_interest_graph(
        "fr",
        users,
        rng.standard_normal((n, 4)).astype(np.float32),
        ITEMS,
        ITEM_EMB,
        TITLES,
        CATEGORIES,
        top_k_items=4,
        top_k_interests=2,
        top_k_neighbours=3,
        model_version="v7",
        round=9,
    )
    store.write(g)
    back = store.read_graph("fr")

    def edges(graph, name, src_nodes, dst_nodes, src, dst, w):
        e = getattr(graph, name)
        return sorted(zip([src_nodes[i] for i in e[src]], [dst_nodes[i] for i in e[dst]], e[w].tolist()))

    def all_edges(gr):
        return {
            "ui": edges(gr, "user_item", gr.users, gr.items, "user_idx", "item_idx", "score"),
            "uc": edges(gr, "user_interest", gr.users, gr.interests, "user_idx", "interest_idx", "weight"),
            "ii": edges(gr, "item_item", gr.items, gr.items, "src_idx", "dst_idx", "similarity"),
        }

    original = all_edges(g)
    assert original == all_edges(back)  # float32 values survive the REAL column bit-exactly
    assert len(original["ui"]) == n * 4
    one = users[17]
    assert [r.item for r in store.user_recommendations("fr", one, k=4)] == recs_of(g, one)[0]


def test_replace_keeps_other_shops_and_history(store):
    store.write(build("fr"))
    store.write(build("de", model_version="v1"))
    store.write(build("fr", model_version="v2", round=4, users=["alice", "carol"], user_emb=USER_EMB[[0, 2]]))
    assert store.shops() == ["de", "fr"]
    fr = store.summary("fr")
    assert (fr.model_version, fr.round, fr.n_users, fr.n_user_item) == ("v2", 4, 2, 6)
    assert [v.model_version for v in store.versions("fr")] == ["v2", "v1"]
    with pytest.raises(GraphLookupError):
        store.user_recommendations("fr", "bob")
    assert [r.item for r in store.user_recommendations("de", "bob")][:2] == ["C1", "C2"]
    assert store.summary("de").n_users == 3
    rows = store._conn.execute("SELECT DISTINCT model_version, round FROM user_item WHERE shop = 'fr'").fetchall()
    assert rows == [("v2", 4)]


def _interrupting(original, hook, after=3):
    def rows(*args, **kwargs):
        for i, row in enumerate(original(*args, **kwargs)):
            if i == after:
                hook()
            yield row

    return rows


def test_failed_write_leaves_old_graph(store, monkeypatch):
    store.write(build("fr"))
    store.write(build("de"))
    seen_by_reader = {}

    def fail():
        with GraphStore(store.path) as reader:  # another connection, mid-write
            seen_by_reader["version"] = reader.summary("fr").model_version
            seen_by_reader["recs"] = [r.item for r in reader.user_recommendations("fr", "alice")]
        raise RuntimeError("disk full (injected)")

    monkeypatch.setattr(store_mod, "_item_item_rows", _interrupting(store_mod._item_item_rows, fail))
    new = build("fr", model_version="v2", round=4, users=["zoe"], user_emb=USER_EMB[:1])
    with pytest.raises(RuntimeError, match="injected"):
        store.write(new)
    assert seen_by_reader == {"version": "v1", "recs": ["A1", "A2", "B2"]}
    s = store.summary("fr")
    assert (s.model_version, s.n_users, s.n_user_item) == ("v1", 3, 9)
    assert [r.item for r in store.user_recommendations("fr", "alice")] == ["A1", "A2", "B2"]
    with pytest.raises(GraphLookupError):
        store.user_interests("fr", "zoe")
    assert len(store.versions("fr")) == 1 and store.summary("de").n_users == 3
    monkeypatch.undo()
    store.write(new)  # the store is still usable
    assert store.summary("fr").model_version == "v2"


def test_reader_sees_old_graph_until_commit(store, monkeypatch):
    store.write(build("fr"))
    reader = GraphStore(store.path)
    seen = []
    monkeypatch.setattr(
        store_mod, "_user_item_rows", _interrupting(store_mod._user_item_rows, lambda: seen.append(reader.summary("fr").model_version))
    )
    store.write(build("fr", model_version="v2"))
    assert seen == ["v1"]
    assert reader.summary("fr").model_version == "v2"
    reader.close()


def test_upsert_user(store):
    store.write(build("fr"))
    store.upsert_user(
        "fr", "alice", [("books", 0.7), ("audio", 0.2)], [("B1", 0.5), ("C1", 0.9)], model_version="v2", round=5, event_offset="e9"
    )
    recs = store.user_recommendations("fr", "alice")
    assert [(r.item, r.rank, r.model_version, r.round) for r in recs] == [("C1", 1, "v2", 5), ("B1", 2, "v2", 5)]
    assert [i.interest for i in store.user_interests("fr", "alice")] == ["books", "audio"]
    assert [r.item for r in store.user_recommendations("fr", "carol")] == ["B1", "B2", "A2"]
    store.upsert_user("fr", "dave", [("cooking", 1.0)], [("C2", 0.3)], "v2", 5)
    s = store.summary("fr")
    counts = (s.n_users, s.n_user_item, s.n_user_interest, s.n_upserts)
    assert counts == (4, 9 - 3 + 2 + 1, 6 - 2 + 2 + 1, 2)
    assert s.model_version == "v1"  # the shop's graph is still the v1 build
    assert store.user_recommendations("fr", "dave")[0].title == "Wok"

    with pytest.raises(GraphLookupError, match="item 'Z9' not in shop 'fr'"):
        store.upsert_user("fr", "alice", [], [("Z9", 1.0)], "v3", 6)
    assert store.user_recommendations("fr", "alice")[0].model_version == "v2"  # unchanged
    with pytest.raises(GraphLookupError, match="interest 'garden'"):
        store.upsert_user("fr", "alice", [("garden", 1.0)], [], "v3", 6)
    with pytest.raises(GraphLookupError, match="shop 'it'"):
        store.upsert_user("it", "alice", [], [], "v3", 6)
    with pytest.raises(ValueError, match="twice"):
        store.upsert_user("fr", "alice", [], [("C1", 1.0), ("C1", 0.5)], "v3", 6)


def test_lookup_errors_say_what_exists(store):
    with pytest.raises(GraphLookupError, match="no graphs yet"):
        store.summary("fr")
    store.write(build("fr"))
    with pytest.raises(KeyError) as info:
        store.user_recommendations("fr", "alicia")
    msg = str(info.value)
    assert msg.startswith("user 'alicia' not in shop 'fr' (3 users; e.g. ")
    assert "'alice'" in msg and "'bob'" in msg
    with pytest.raises(GraphLookupError, match=r"shop 'uk' not in graph store .*\(1 shop: 'fr'\)"):
        store.user_interests("uk", "alice")
    with pytest.raises(GraphLookupError, match=r"item 'A3' not in shop 'fr' \(6 items; e.g. 'B1'"):
        store.item_neighbours("fr", "A3")
    # a user who exists but has no edges is not an error
    store.upsert_user("fr", "eve", [], [], "v1", 3)
    assert store.user_recommendations("fr", "eve") == []
    with pytest.raises(ValueError):
        store.user_recommendations("fr", "alice", k=0)


def test_not_a_graph_store(tmp_path):
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(GraphStoreError, match=r"garbage\.sqlite.*fedgraph simulate"):
        GraphStore(garbage)

    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER)")
    conn.close()
    with pytest.raises(GraphStoreError, match=r"other\.db.*not a fedgraph graph store.*orders"):
        GraphStore(foreign)

    with pytest.raises(GraphStoreError, match="no graph store at"):
        GraphStore(tmp_path / "missing.sqlite", create=False)
    assert not (tmp_path / "missing.sqlite").exists()


def test_corrupt_store(tmp_path):
    path = tmp_path / "graphs.sqlite"
    rng = np.random.default_rng(0)
    n = 2000
    g = build_interest_graph(
        "fr",
        [f"user-{i:05d}" for i in range(n)],
        rng.standard_normal((n, 4)).astype(np.float32),
        ITEMS,
        ITEM_EMB,
        TITLES,
        CATEGORIES,
        top_k_items=5,
    )
    with GraphStore(path) as s:
        s.write(g)
    data = path.read_bytes()
    assert len(data) > 40 * 4096
    path.write_bytes(data[: len(data) // 3])  # truncated, e.g. a copy that was cut short
    with pytest.raises(GraphStoreError, match=r"graphs\.sqlite.*corrupt.*fedgraph simulate"):
        s = GraphStore(path)
        s.summary("fr")
        for user in ("user-01999", "user-01500", "user-00500"):
            s.user_recommendations("fr", user)
        s.check()


# --- exports --------------------------------------------------------------------------------


def test_export_graphml(store, tmp_path):
    g = build()
    store.write(g)
    out = export_graphml(store, "fr", tmp_path / "out" / "fr.graphml")
    G = nx.read_graphml(out)
    assert G.is_directed()
    assert G.number_of_nodes() == 3 + 6 + 3
    assert G.number_of_edges() == len(g.user_item) + len(g.user_interest) + len(g.item_item)
    types = nx.get_node_attributes(G, "type")
    assert sorted(types.values()).count("user") == 3 and list(types.values()).count("interest") == 3
    edge = G.edges["user:alice", "item:A1"]
    assert edge["type"] == "recommended" and edge["rank"] == 1
    assert edge["weight"] == pytest.approx(1.0)
    assert G.edges["item:A1", "item:A2"]["type"] == "similar_to"
    assert G.nodes["item:B2"]["title"] == "Poems\nvol. 2"
    assert G.graph["model_version"] == "v1" and G.graph["round"] == 3
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(GraphLookupError):
        export_graphml(store, "uk", tmp_path / "out" / "uk.graphml")
    assert not (tmp_path / "out" / "uk.graphml").exists()


def test_export_neo4j(store, tmp_path):
    g = build()
    store.write(g)
    files = export_neo4j(store, "fr", tmp_path / "neo4j")
    assert set(files) == set(NEO4J_FILES) | {"import.cypher", "README.txt"}
    expected_rows = {
        "users.csv": 3,
        "items.csv": 6,
        "interests.csv": 3,
        "interested_in.csv": len(g.user_interest),
        "recommended.csv": len(g.user_item),
        "similar_to.csv": len(g.item_item),
    }
    tables = {}
    for name, n_rows in expected_rows.items():
        with open(files[name], newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        assert rows[0] == NEO4J_FILES[name]
        assert len(rows) - 1 == n_rows
        tables[name] = [dict(zip(rows[0], r)) for r in rows[1:]]
    assert tables["users.csv"][0]["userId:ID(User)"] == "alice"
    assert {r[":LABEL"] for r in tables["items.csv"]} == {"Item"}
    titles = {r["itemId:ID(Item)"]: r["title"] for r in tables["items.csv"]}
    assert titles["A2"] == 'Speaker, "bass" edition' and titles["B2"] == "Poems vol. 2"
    rec = tables["recommended.csv"][0]
    assert (rec[":START_ID(User)"], rec[":END_ID(Item)"], rec["rank:int"], rec[":TYPE"]) == ("alice", "A1", "1", "RECOMMENDED")
    assert float(rec["weight:float"]) == pytest.approx(1.0)
    assert NEO4J_FILES["recommended.csv"][:3] == [":START_ID(User)", ":END_ID(Item)", "weight:float"]
    cypher = files["import.cypher"].read_text()
    assert cypher.count("LOAD CSV WITH HEADERS") == 6 and "file:///recommended.csv" in cypher
    assert "neo4j-admin database import" in files["README.txt"].read_text()
    assert not [p for p in (tmp_path / "neo4j").iterdir() if p.name.endswith(".tmp")]


def test_item_bias_shifts_recommendation_scores():
    from fedgraph.graph import build_interest_graph

    users = np.array([[1.0, 0.0]], dtype=np.float32)
    items = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]], dtype=np.float32)
    args = ("s", ["u"], users, ["a", "b", "c"], items, ["A", "B", "C"], ["x", "x", "y"])
    plain = build_interest_graph(*args, top_k_items=1)
    biased = build_interest_graph(*args, top_k_items=1, item_bias=np.array([0.0, 0.0, 5.0]))
    assert plain.user_item["item_idx"].tolist() == [0]
    assert biased.user_item["item_idx"].tolist() == [2]
    assert biased.user_item["score"][0] == pytest.approx(5.0)

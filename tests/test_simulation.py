"""End to end: `fedgraph simulate` runs a real Flower simulation (SuperLink + `flwr run`)."""

import json
import shutil
import subprocess

import pytest

from fedgraph.graph import GraphLookupError, GraphStore

pytestmark = pytest.mark.timeout(600)


def _no_process_mentions(text):
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if text in line and "pytest" not in line]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, text_cache, run_fedgraph):
    out = tmp_path_factory.mktemp("e2e") / "run"
    result = run_fedgraph(
        "simulate",
        "--out",
        str(out),
        "data.source=synthetic",
        "data.synthetic_shops=2",
        "data.synthetic_users_per_shop=[30, 60]",
        "data.synthetic_items_per_shop=[40, 80]",
        "train.rounds=2",
        "train.local_epochs=1",
        f"features.cache_dir='{text_cache}'",
        "evaluation.lightgcn_epochs=2",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result.stdout


def test_two_shops_two_rounds_end_to_end(finished_run):
    out, stdout = finished_run
    assert "round 2/2 | shops 2/2" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["methods"]) == {
        "popularity",
        "content",
        "itemknn",
        "ease",
        "local",
        "federated",
        "hybrid",
        "pooled",
        "pooled_ease",
        "lightgcn_pooled",
    }
    shops = [s["shop"] for s in metrics["shops"]]
    assert len(shops) == 2
    for method in metrics["methods"].values():
        assert 0.0 <= method["recall@20"] <= 1.0 and 0.0 <= method["ndcg@20"] <= 1.0
        assert set(method["per_shop"]) == set(shops)
        assert all(set(m) >= {"recall@20", "ndcg@20"} for m in method["per_shop"].values())
    assert [r["round"] for r in metrics["rounds"]] == [0, 1, 2]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["round-0001.pt", "round-0002.pt"]
    assert (out / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the shop-private item part stayed in the shop's directory: the latest, and the copies of
    # the kept round, the last round and the one before it (from which the last can be replayed)
    kept = metrics["selection"]["round"]
    assert sorted(p.name for p in (out / "local").iterdir()) == sorted([f"{s}.pt" for s in shops] + shops)
    for shop in shops:
        assert sorted(p.name for p in (out / "local" / shop).iterdir()) == sorted({f"round-{r:04d}.pt" for r in (kept, 1, 2) if r > 0})
    assert not _no_process_mentions(str(out)), "a Flower process of the run is still alive"


def test_validation_and_test_are_disjoint_and_the_history_is_the_whole_training_period(finished_run):
    from fedgraph.federation.run_dir import RunDir
    from fedgraph.shop import ShopData

    run = RunDir.at(finished_run[0])
    for shop in run.shop_names:
        val, final = ShopData.load(run.shop_file(shop)), ShopData.load(run.final_shop_file(shop))
        assert list(val.users) == list(final.users) and list(val.items) == list(final.items)
        assert len(val.evaluable_users()) > 0 and len(final.evaluable_users()) > 0
        for u in range(final.num_users):
            fit, held_val, history, test = (
                set(a.tolist()) for a in (val.history(u), val.test_items(u), final.history(u), final.test_items(u))
            )
            assert not held_val & test and not fit & held_val and not history & test
            assert fit | held_val == history  # validation comes out of the training period


def test_the_kept_round_is_the_validation_best_and_test_is_scored_on_it(finished_run):
    from fedgraph.evaluation import evaluate_model
    from fedgraph.federation.run_dir import RunDir
    from fedgraph.federation.shop_side import model_for_shop
    from fedgraph.shop import ShopData

    out, stdout = finished_run
    run = RunDir.at(out)
    metrics = json.loads((out / "metrics.json").read_text())
    validation = {r["round"]: r["ndcg@20"] for r in metrics["rounds"]}
    kept = metrics["selection"]["round"]
    assert validation[kept] == max(validation.values()) and f"selection: round {kept} kept" in stdout
    assert "federated item counts: 2 shops" in stdout and (out / "federated_counts.npz").exists()
    state = run.load_checkpoint(kept)["state_dict"] if kept else run.new_model().state_dict()
    for shop in run.shop_names:
        final = ShopData.load(run.final_shop_file(shop))
        model = model_for_shop(run, final, state, server_round=kept)
        assert evaluate_model(model, final)["ndcg@20"] == pytest.approx(metrics["methods"]["federated"]["per_shop"][shop]["ndcg@20"])
        choice = metrics["selection"]["hybrid"][shop]
        assert 0.0 <= choice["alpha"] <= 1.0 and choice["l2"] > 0 and choice["gram"] in ("own", "federated")
        assert choice["validation_ndcg"] >= choice["global_validation_ndcg"]  # α = 1 was among the choices


def test_what_a_shop_sends_holds_no_private_part(finished_run, tmp_path, monkeypatch):
    """The reply of the ClientApp's train handler: the shared weights and numeric metrics only;
    neither the shop-private item table nor anything of the hybrid's EASE."""
    import shutil
    from types import SimpleNamespace

    from flwr.app import ArrayRecord, ConfigRecord, Message, Metadata, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from fedgraph.apps.client_app import train
    from fedgraph.federation.run_dir import RunDir
    from fedgraph.federation.shop_side import shared_names
    from fedgraph.shop import ShopData

    for name, value in (("_run_id", 1), ("_task_id", "t"), ("_node_id", 1)):  # as inside a ClientApp process
        monkeypatch.setattr(TaskIdentity, name, value)
    copy = tmp_path / "run"
    shutil.copytree(finished_run[0], copy)  # training writes the shop's private part: leave the shared run as it is
    run = RunDir.at(copy)
    state = run.load_checkpoint(2)["state_dict"]
    for partition, shop in enumerate(run.round_shops):
        meta = Metadata(
            run_id=1,
            message_id=f"m{partition}",
            src_node_id=0,
            dst_node_id=partition + 1,
            reply_to_message_id="",
            group_id="3",
            created_at=0.0,
            ttl=60.0,
            message_type="train",
        )
        msg = Message(content=RecordDict({"arrays": ArrayRecord(state), "config": ConfigRecord({"server-round": 3})}), metadata=meta)
        reply = train(msg, SimpleNamespace(node_config={"partition-id": partition}, run_config={"run-dir": str(run.path)}))
        assert set(reply.content.keys()) == {"arrays", "metrics"}
        sent = reply.content["arrays"].to_torch_state_dict()
        assert list(sent) == shared_names(str(run.path)) and not any(name.startswith("local.") for name in sent)
        assert {k: v.shape for k, v in sent.items()} == {k: v.shape for k, v in state.items()}  # nothing sized by the shop's catalog
        assert (
            ShopData.load(run.shop_file(shop)).num_items > 0 and (run.local_state_file(shop, 3)).exists()
        )  # it did train, with its private part
        assert all(isinstance(v, (int, float)) for v in reply.content["metrics"].values())


def test_interest_graph_built_and_queryable(finished_run, run_fedgraph):
    out, _ = finished_run
    store = GraphStore(out / "graph.sqlite")
    shops = store.shops()
    assert len(shops) == 2
    summary = store.summary(shops[0])
    kept = json.loads((out / "metrics.json").read_text())["selection"]["round"]
    assert summary["round"] == kept and summary["n_users"] > 0 and summary["n_user_item"] > 0
    user_id = list(store.iter_nodes(shops[0], "user"))[0][0]
    recs = store.user_recommendations(shops[0], user_id, k=5)
    assert len(recs) == 5 and recs[0].score >= recs[-1].score
    cli = run_fedgraph("graph", str(out), "user", shops[0], str(user_id), timeout=120)
    assert cli.returncode == 0 and "recommendations:" in cli.stdout, cli.stderr


def test_resume_continues_from_last_checkpoint(finished_run, run_fedgraph):
    out, _ = finished_run
    history = json.loads((out / "federated_history.json").read_text())
    uninterrupted = {r["round"]: (r["model_version"], r["eval"]) for r in history["rounds"]}
    history["rounds"] = history["rounds"][:2]  # rounds 0 and 1: as if stopped during round 2
    (out / "federated_history.json").write_text(json.dumps(history))
    (out / "checkpoints" / "round-0002.pt").unlink()
    (out / "metrics.json").unlink()
    result = run_fedgraph("simulate", "--resume", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resuming after round 1/2" in result.stdout
    assert "round 1/2 |" not in result.stdout and "round 2/2 | shops 2/2" in result.stdout
    assert "baseline popularity: reused" in result.stdout
    assert json.loads((out / "metrics.json").read_text())["rounds"][-1]["round"] == 2
    # Issue 13.7: the replayed round equals the uninterrupted one (the shops start it from their
    # private part as kept after round 1, not from the one they saved after round 2).
    replayed = {r["round"]: (r["model_version"], r["eval"]) for r in json.loads((out / "federated_history.json").read_text())["rounds"]}
    assert replayed == uninterrupted


def test_corrupt_checkpoint_is_reported_on_resume(finished_run, run_fedgraph, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run[0], out)  # the module's run stays intact for the tests after this one
    ckpt = out / "checkpoints" / "round-0002.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    result = run_fedgraph("simulate", "--resume", str(out), timeout=120)
    assert result.returncode != 0
    assert "round-0002.pt is unreadable" in result.stderr and "resume from round 1" in result.stderr


def test_new_run_refuses_a_used_directory(finished_run, run_fedgraph):
    out, _ = finished_run
    result = run_fedgraph("simulate", "--out", str(out), timeout=120)
    assert result.returncode == 2 and "--resume" in result.stderr


# Slow: the default run already sees a shop refuse a round for its budget in a DP simulation
# (tests/federation/test_secure_aggregation.py) and the budget arithmetic in tests/privacy/test_dp_training_and_budget.py.
@pytest.mark.slow
def test_dp_run_accounts_every_round_and_stops_shops_out_of_budget(tmp_path, text_cache, run_fedgraph):
    """σ fixed at 1.5 with a budget of ε = 4: the bigger-q shop (36 users, q = 0.89) fits one
    round, the other (47 users, q = 0.68) two; the run goes on without them, then stops."""
    out = tmp_path / "dp"
    result = run_fedgraph(
        "simulate",
        "--out",
        str(out),
        "data.source=synthetic",
        "data.synthetic_shops=2",
        "data.synthetic_users_per_shop=[30, 60]",
        "data.synthetic_items_per_shop=[40, 80]",
        "train.rounds=3",
        "train.local_epochs=1",
        f"features.cache_dir='{text_cache}'",
        "evaluation.baselines=['popularity']",
        "federation.min_train_shops=1",
        "privacy.enabled=true",
        "privacy.target_epsilon=4.0",
        "privacy.noise_multiplier=1.5",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "round 2/3 | shops 1/1" in result.stdout and "out of privacy budget, not trained: shop-00001" in result.stdout
    assert "every shop has spent its privacy budget" in result.stdout
    history = json.loads((out / "federated_history.json").read_text())
    assert history["stopped"]["round"] == 3
    metrics = json.loads((out / "metrics.json").read_text())
    privacy = metrics["privacy"]
    assert privacy["enabled"] and privacy["unit"].startswith("one customer")
    shops = privacy["per_shop"]
    assert {s: v["rounds_trained"] for s, v in shops.items()} == {"shop-00000": 2, "shop-00001": 1}
    assert all(
        v["rounds_refused"] >= 1 and 0 < v["epsilon"] <= 4.0 and v["epsilon_by_accountant"]["prv"] < v["epsilon_by_accountant"]["rdp"]
        for v in shops.values()
    )
    # the ε the server saw each round is the ε in the shop's ledger
    seen = {s: t["epsilon"] for r in history["rounds"] if r["round"] > 0 for s, t in r["train"].items()}
    assert seen == {s: pytest.approx(v["epsilon"]) for s, v in shops.items()}
    assert "privacy: user-level DP-SGD per shop" in result.stdout


def test_forgetting_a_customer_in_a_run_removes_them_and_keeps_the_same_id_in_another_shop(finished_run, tmp_path):
    """Issue 14.3, simulations: ``forget_in_run`` removes the customer's rows from the shop's data
    files (so a resumed run never trains on them) and the graph; the same id in another shop is
    another customer and stays."""
    from fedgraph.privacy.erasure import files_naming, forget_in_run
    from fedgraph.shop import ShopData

    out, _ = finished_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    a, b = sorted(json.loads((run / "shops" / "index.json").read_text())["shops"])
    users_a, users_b = (set(ShopData.load(run / "shops" / f"{s}.npz").users.tolist()) for s in (a, b))
    user = sorted(users_a & users_b)[0]  # synthetic shops number their customers alike
    assert files_naming([run], user, a)  # before: the shop's data files and graph name them
    report = forget_in_run(run, a, user)
    assert report.left == [] and report.events > 0 and report.graph_rows > 0
    for name in (f"{a}.npz", f"{a}.final.npz"):
        data = ShopData.load(run / "shops" / name)
        assert user not in data.users.tolist() and data.num_users == len(users_a) - 1
        assert len(data.indptr) == data.num_users + 1 and data.indptr[-1] == len(data.item) == len(data.attr)
    assert user in ShopData.load(run / "shops" / f"{b}.npz").users.tolist()
    with GraphStore(run / "graph.sqlite") as store:
        with pytest.raises(GraphLookupError):
            store.user_recommendations(a, user, k=3)
        assert store.user_recommendations(b, user, k=3)


def test_audiences_for_an_interest_and_for_a_free_text_topic(finished_run, run_fedgraph, tmp_path):
    """Issue 14.2: an interest ranks the customers by their interest edge; a free-text topic is
    scored by the model for every customer; both export CSV; the topic needs the model."""
    from fedgraph.graph.audience import interest_audience, topic_audience
    from fedgraph.graph.serving import ServingError, open_served_shop

    out, _ = finished_run
    store = GraphStore(out / "graph.sqlite")
    shop = store.shops()[0]
    interest = store.interests(shop)[0]
    found = interest_audience(store, shop, interest, top=1000)
    edges = {(u, i): w for u, i, w, *_ in store.iter_edges(shop, "interested_in")}
    expected = sorted(((w, u) for (u, i), w in edges.items() if i == interest), key=lambda p: (-p[0], p[1]))
    assert found.members and [m.user for m in found.members] == [u for _, u in expected]
    assert [m.score for m in found.members] == pytest.approx([w for w, _ in expected])
    with pytest.raises(GraphLookupError, match="interest"):
        interest_audience(store, shop, "no such interest")

    served = open_served_shop(out, shop)
    topic = topic_audience(served, "soft baby blanket for a newborn", top=served.data.num_users)
    assert topic.scored_users == served.data.num_users == len(topic.members)
    scores = [m.score for m in topic.members]
    assert scores == sorted(scores, reverse=True) and len({m.user for m in topic.members}) == len(scores)
    # the ranking is the model's: scoring the topic's feature row by hand gives the same order
    from fedgraph.graph.audience import topic_features

    item = served.model.item_embeddings(topic_features(served, "soft baby blanket for a newborn"))
    by_hand = served.model.score(served.user_embeddings(), item)[:, 0]
    assert by_hand.max().item() == pytest.approx(scores[0], rel=1e-5)
    other = topic_audience(served, "silver jewellery charm", top=served.data.num_users)
    assert [m.user for m in other.members] != [m.user for m in topic.members]  # the topic matters
    with pytest.raises(ServingError, match="needs the model"):
        open_served_shop(out / "graph.sqlite", shop)

    csv_file = tmp_path / "audience.csv"
    cli = run_fedgraph("graph", str(out), "audience", shop, "baby blanket", "--top", "5", "--csv", str(csv_file), timeout=120)
    assert cli.returncode == 0 and "topic" in cli.stdout, cli.stderr
    lines = csv_file.read_text().splitlines()
    assert lines[0] == "rank,user,score,basis,query" and len(lines) == 6 and lines[1].startswith("1,")
    bad = run_fedgraph("graph", str(out / "graph.sqlite"), "audience", shop, "baby blanket", timeout=120)
    assert bad.returncode == 1 and "needs the model" in bad.stderr and "Traceback" not in bad.stderr


def test_an_explanation_takes_the_models_own_score_apart(finished_run, run_fedgraph):
    """Issue 14.1: the explained score is the score the graph ranks by (model_scores), its parts
    add up, attention is a distribution over the history, and the content term's shares add up
    to the content term exactly."""
    import numpy as np

    from fedgraph.evaluation import model_scores
    from fedgraph.graph.explain import ExplainError, explain, history_effects
    from fedgraph.graph.serving import open_served_shop

    out, _ = finished_run
    store = GraphStore(out / "graph.sqlite")
    shop = store.shops()[0]
    served = open_served_shop(out, shop)
    data = served.data
    u = int(next(u for u in data.evaluable_users() if len(data.history(u)) >= 3))
    user = str(data.users[u])
    item = store.user_recommendations(shop, user, k=1)[0].item
    i = int(np.flatnonzero(data.items == item)[0])
    found = explain(served, user, item, top=3, store=store)
    expected = float(model_scores(served.model, data, np.array([u]), history=served.history)[0, i])
    assert found.score == pytest.approx(expected, rel=1e-4, abs=1e-4)
    assert found.learned + found.content + found.bias == pytest.approx(found.score, rel=1e-4, abs=1e-4)
    assert len(found.reasons) == 3 and [r.contribution for r in found.reasons] == sorted(
        (r.contribution for r in found.reasons), reverse=True
    )
    parts, rows = history_effects(served, u, i)
    assert rows[:, 0].sum() == pytest.approx(1.0, abs=1e-5) and len(rows) == min(len(data.history(u)), served.history)
    assert {r.item for r in found.reasons} <= {str(data.items[j]) for j in data.history(u)}
    assert found.interests and found.interests[0]["interest"] == found.category
    with pytest.raises(ExplainError, match="not in shop"):
        explain(served, "nobody", item)
    cli = run_fedgraph("graph", str(out), "explain", shop, user, "-k", "2", "--json", timeout=120)
    assert cli.returncode == 0, cli.stderr
    listed = json.loads(cli.stdout)
    assert len(listed) == 2 and all(e["reasons"] and 0 <= e["content_share"] <= 1 for e in listed)

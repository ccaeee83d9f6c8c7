"""Forgetting a customer (issue 14.3): after ``fedgraph client forget`` no file of the shop's
state directory or drop folder holds the customer's id or events, and a restarted daemon does
not take them back from an export delivered again."""

from __future__ import annotations

import gzip
import json
import shutil
import zipfile

import pandas as pd
import pytest

from fedgraph.deploy.demo import make_demo, write_events
from fedgraph.deploy.forget import forget_customer
from fedgraph.deploy.ingest import DropFolder, EventLog
from fedgraph.deploy.logs import setup_logging
from fedgraph.deploy.paths import ShopPaths, StateDirBusy
from fedgraph.deploy.settings import ShopConfig
from fedgraph.deploy.shop_state import GraphUpdater, load_catalog_features, refresh_training_data, write_run_dir
from fedgraph.graph import GraphLookupError, GraphStore

CUSTOMER = "cust-Q7ZK93"  # distinctive, so a byte search cannot match anything else


def _every_byte(path):
    """A file's bytes, with gzip and zip (npz, torch) members opened: what an auditor would grep."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data += gzip.decompress(data)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            data += b"".join(archive.read(name) for name in archive.namelist())
    return data


def _files_naming(root, needle: str):
    encodings = (needle.encode("utf-8"), needle.encode("utf-32-le"))  # numpy keeps str arrays as UTF-32
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and any(e in _every_byte(p) for e in encodings))


@pytest.fixture
def shop(tmp_path, text_cache):
    """A shop daemon's state after ingesting two drop files, building its training data and its
    graph, with one customer renamed ``CUSTOMER``; the daemon itself is not running."""
    demo = make_demo(tmp_path / "demo", shops=1, cache_dir=str(text_cache))
    name = demo.shops[0]
    cfg = ShopConfig.load(demo.shop_config(name))
    events = demo.events[name].copy()
    victim = events["user"].value_counts().index[0]
    events["user"] = events["user"].astype(str).replace({str(victim): CUSTOMER})
    half = len(events) // 2
    export = tmp_path / "export-part1.csv"  # the shop's own copy of the first export, outside the daemon's folders
    write_events(events.iloc[:half], export)
    shutil.copy(export, demo.drop(name) / "part1.csv")
    write_events(events.iloc[half:], demo.drop(name) / "part2.csv")
    paths = ShopPaths(cfg.state_dir)
    config = cfg.run_config()
    log = setup_logging("fedgraph.test.forget", paths.log, "debug", stderr=False)
    log.warning("example", f"a line naming customer {CUSTOMER}", user=CUSTOMER)  # as an error message might
    log.close()
    log = setup_logging("fedgraph.test.forget", paths.log, "debug", stderr=False)
    catalog = load_catalog_features(cfg.resolve(cfg.source.catalog), name, config, paths.items, log=log)
    write_run_dir(paths, config, [name])
    log_ = EventLog(paths.events)
    DropFolder(demo.drop(name), log_, shop=name, items=set(catalog.items), log=log, settle_s=0.0).poll()
    refresh_training_data(paths, catalog, config, log_)
    updater = GraphUpdater(paths, catalog, config, log_)
    updater.step()
    updater.close()
    log_.close()
    log.close()
    mine = int((events["user"] == CUSTOMER).sum())
    return demo, cfg, name, paths, export, mine, len(events)


def test_after_forget_no_file_names_the_customer_and_the_rest_is_kept(shop):
    demo, cfg, name, paths, _, mine, total = shop
    root = demo.root / name
    before = _files_naming(root, CUSTOMER)
    assert {"state/events.sqlite", "state/graph.sqlite", f"state/run/shops/{name}.npz", "drop/processed/part1.csv"} <= set(before), before
    with GraphStore(paths.graph) as store:
        assert store.user_recommendations(name, CUSTOMER, k=3)
        users_before = store.summary(name)["n_users"]

    report = forget_customer(cfg, CUSTOMER)

    assert report.events == mine > 0 and report.graph_rows > 0 and report.left == []
    assert report.training_data == "rebuilt without the customer"
    assert _files_naming(root, CUSTOMER) == []  # every file, bytes and compressed members alike
    events = EventLog(paths.events)
    assert events.count() == total - mine  # the other customers' events are all still there
    events.close()
    with GraphStore(paths.graph) as store:
        with pytest.raises(GraphLookupError):
            store.user_recommendations(name, CUSTOMER, k=3)
        assert store.summary(name)["n_users"] == users_before - 1
    from fedgraph.shop import ShopData

    data = ShopData.load(paths.run / "shops" / f"{name}.npz")
    assert CUSTOMER not in list(data.users) and data.num_users == users_before - 1
    from fedgraph.deploy.status import collect, render

    status = collect(cfg)
    assert status["events"]["customers_forgotten"] == 1 and "1 customer(s) forgotten on request" in render(status)
    logged = [json.loads(line) for line in paths.log.read_text().splitlines()]
    done = [e for e in logged if e["event"] == "customer_forgotten"]
    assert len(done) == 1 and done[0]["events"] == mine and CUSTOMER not in json.dumps(done[0])


def test_a_restarted_daemon_does_not_take_the_customer_back_from_a_delivered_again_export(shop):
    demo, cfg, name, paths, export, _, total = shop
    forget_customer(cfg, CUSTOMER)
    drop = demo.drop(name)
    shutil.copy(export, drop / "part1-again.csv")  # the same bytes, already processed once
    redone = pd.read_csv(export)  # a re-export: the same old events plus one new event of another customer
    other = redone[redone["user"] != CUSTOMER].iloc[0]
    new_event = other.copy()
    new_event["event_id"] = "e-new-1"
    # under the name of a file already in processed/, so it is archived as processed/part2.csv.1
    pd.concat([redone, new_event.to_frame().T]).to_csv(drop / "part2.csv", index=False)
    # a restart: new event log connection, new drop folder reader, as the daemon makes them
    catalog = load_catalog_features(cfg.resolve(cfg.source.catalog), name, cfg.run_config(), paths.items)
    events = EventLog(paths.events)
    log = setup_logging("fedgraph.test.forget.restart", paths.log, "debug", stderr=False)
    report = DropFolder(drop, events, shop=name, items=set(catalog.items), log=log, settle_s=0.0).poll()
    assert report.new_events == 1 and events.count() == total - (redone["user"] == CUSTOMER).sum() + 1
    assert events.histories([CUSTOMER]).empty
    events.close()
    log.close()
    assert _files_naming(demo.root / name, CUSTOMER) == []  # processed/ keeps the files without their rows
    assert (drop / "processed" / "part2.csv.1").is_file()
    # and a second erasure reads the renamed archive like any other (another customer this time)
    second = str(redone.loc[redone["user"] != CUSTOMER, "user"].iloc[-1])
    report = forget_customer(cfg, second)
    assert str(drop / "processed" / "part2.csv.1") in report.drop_files_rewritten and report.left == []


def test_forget_refuses_while_the_daemon_holds_the_state_directory(shop):
    _, cfg, _, paths, _, mine, _ = shop
    with paths.exclusive("the shop daemon"):
        with pytest.raises(StateDirBusy, match=r"in use by the shop daemon \(pid \d+\).*stop it first"):
            forget_customer(cfg, CUSTOMER)
    events = EventLog(paths.events)
    assert len(events.histories([CUSTOMER])) == mine  # nothing was touched
    events.close()


def test_the_cli_reads_ids_from_a_file_and_reports_without_a_traceback(shop, run_fedgraph, tmp_path):
    _, cfg, _, paths, _, mine, _ = shop
    ids = tmp_path / "erasure.txt"
    ids.write_text(f"{CUSTOMER}\nnobody-with-this-id\n")
    done = run_fedgraph("client", "forget", "--config", str(cfg.path), "--ids-file", str(ids), "--json", timeout=180)
    assert done.returncode == 0, done.stderr
    reports = json.loads(done.stdout)
    assert [r["events"] for r in reports] == [mine, 0] and all(r["left"] == [] for r in reports)
    assert "Traceback" not in done.stderr
    empty = run_fedgraph("client", "forget", "--config", str(cfg.path), timeout=120)
    assert empty.returncode != 0 and "no customer given" in empty.stderr and "Traceback" not in empty.stderr


def test_forget_in_a_shop_that_has_not_trained_yet_removes_its_events(tmp_path):
    """A state directory with events but no training data or graph yet: forget removes the
    events and reports that no training data was built."""
    demo = make_demo(tmp_path / "demo", shops=1)
    name = demo.shops[0]
    cfg = ShopConfig.load(demo.shop_config(name))
    paths = ShopPaths(cfg.state_dir)
    events = EventLog(paths.events)
    frame = demo.events[name].copy()
    user = str(frame["user"].iloc[0])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    events.ingest(frame, source="s", name="s")
    events.close()
    report = forget_customer(cfg, user)
    assert report.events == int((frame["user"].astype(str) == user).sum()) and report.training_data == "not built yet"


def test_a_customers_searches_feed_the_shops_data_and_go_with_the_customer(shop):
    """Issue 14.4: search rows dropped into the folder are ingested, reach the training data as
    the customer's embedded queries, and ``forget`` leaves no file holding their text."""
    from fedgraph.shop import ShopData

    demo, cfg, name, paths, _, _, _ = shop
    events = demo.events[name]
    other = next(u for u in events["user"].astype(str).unique() if u != CUSTOMER)
    late = pd.Timestamp(events["timestamp"].min())  # before anything is held out
    searches = pd.DataFrame(
        {
            "event_id": ["q-1", "q-2", "q-3"],
            "user": [CUSTOMER, CUSTOMER, other],
            "item": ["", "", ""],
            "timestamp": [str(late)] * 3,
            "kind": ["search"] * 3,
            "weight": ["", "", ""],
            "query": ["zanzibar velvet lampshade", "zanzibar brass candlestick", "plain mug"],
        }
    )
    searches.to_csv(demo.drop(name) / "part3.csv", index=False)
    config = cfg.run_config()
    log = setup_logging("fedgraph.test.forget", paths.log, "debug", stderr=False)
    catalog = load_catalog_features(cfg.resolve(cfg.source.catalog), name, config, paths.items, log=log)
    log_ = EventLog(paths.events)
    report = DropFolder(demo.drop(name), log_, shop=name, items=set(catalog.items), log=log, settle_s=0.0).poll()
    assert report.new_events == 3 and log_.counts()["searches"] == 3
    refresh_training_data(paths, catalog, config, log_)
    log_.close()
    log.close()
    data = ShopData.load(paths.run / "shops" / f"{name}.npz")
    assert len(data.queries(list(data.users).index(CUSTOMER))) == 2 and len(data.queries(list(data.users).index(other))) == 1
    root = demo.root / name
    assert "state/events.sqlite" in _files_naming(root, "zanzibar")

    forget_customer(cfg, CUSTOMER)

    assert _files_naming(root, "zanzibar") == [] and _files_naming(root, CUSTOMER) == []
    data = ShopData.load(paths.run / "shops" / f"{name}.npz")
    assert len(data.queries(list(data.users).index(other))) == 1  # the other customer's search is kept


def test_forgetting_the_last_customer_with_purchases_when_others_only_searched_completes(shop):
    """Review of issue 14.4: the event count included searches, so forgetting the last customer
    with interactions tried to rebuild training data from searches alone and stopped half-way."""
    demo, cfg, name, paths, _, _, _ = shop
    log_ = EventLog(paths.events)
    for user in {str(u) for u in demo.events[name]["user"].astype(str)} - {CUSTOMER}:
        log_.forget_user(user)
    search = pd.DataFrame(
        {"event_id": ["q-9"], "shop": [name], "user": ["only-searched"], "item": [""], "timestamp": [pd.Timestamp("2011-01-01")]}
    ).assign(kind="search", weight=1.0, query="brass lamp")
    log_.ingest(search, source="s", name="s.csv")
    log_.close()

    report = forget_customer(cfg, CUSTOMER)

    assert report.training_data == "removed (no events left)" and report.left == []

"""Deployment building blocks without a network: certificates, ingestion, graph updates, status."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import stat
import threading
import time

import numpy as np
import pandas as pd
import pytest
import torch
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fedgraph.config import ConfigError, RunConfig
from fedgraph.deploy import certs
from fedgraph.deploy.ingest import DropFolder, EventLog, SqliteTable
from fedgraph.deploy.logs import setup_logging
from fedgraph.deploy.settings import ServerConfig, ShopConfig

SHOP = "berlin"
ITEMS = [f"i{n:03d}" for n in range(30)]


def _events(start: int, n: int, *, users: int = 5, t0: str = "2024-01-01") -> pd.DataFrame:
    rng = np.random.default_rng(start)
    return pd.DataFrame(
        {
            "event_id": [f"e{start + k:06d}" for k in range(n)],
            "user": [f"u{(start + k) % users}" for k in range(n)],
            "item": [ITEMS[int(i)] for i in rng.integers(0, len(ITEMS), n)],
            "timestamp": (pd.Timestamp(t0) + pd.to_timedelta(np.arange(start, start + n) * 3600, unit="s")).astype(str),
            "kind": ["view", "cart", "purchase"] * (n // 3) + ["view"] * (n % 3),
            "weight": [1.0] * n,
        }
    )


@pytest.fixture
def log(tmp_path):
    return setup_logging("fedgraph.test.deploy", tmp_path / "log.jsonl", "debug", stderr=False)


def _log_lines(tmp_path):
    for handler in logging.getLogger("fedgraph.test.deploy").handlers:
        handler.flush()
    return [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------- certificates


def test_certs_keys_private_and_server_cert_valid(tmp_path):
    paths = certs.init_federation(tmp_path / "c", hosts=["fl.example.com", "203.0.113.7"], shops=["berlin", "paris"])
    for key in (paths.ca_key, paths.server_key, paths.shop_key("berlin"), paths.shop_key("paris")):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert stat.S_IMODE(paths.ca_cert.stat().st_mode) == 0o644
    assert not list((tmp_path / "c").rglob("*.tmp"))
    ca = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "fl.example.com"} <= set(san.get_values_for_type(x509.DNSName))
    assert {"127.0.0.1", "203.0.113.7"} <= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    # the shop key pair is what Flower reads: OpenSSH EC keys, the public one matching the private one
    private = serialization.load_ssh_private_key(paths.shop_key("berlin").read_bytes(), None)
    public = serialization.load_ssh_public_key(paths.shop_pub("berlin").read_bytes())
    assert private.public_key().public_numbers() == public.public_numbers()
    assert paths.shops() == ["berlin", "paris"]


def test_certs_refuse_to_overwrite_and_reject_open_keys(tmp_path):
    paths = certs.init_federation(tmp_path / "c", shops=["berlin"])
    before = paths.shop_key("berlin").read_bytes()
    with pytest.raises(certs.CertError, match="already exists.*--force"):
        certs.create_shop_keys(paths, "berlin")
    assert paths.shop_key("berlin").read_bytes() == before
    certs.create_shop_keys(paths, "berlin", force=True)
    assert paths.shop_key("berlin").read_bytes() != before
    os.chmod(paths.server_key, 0o644)
    with pytest.raises(certs.CertError, match="chmod 600"):
        certs.check_private_permissions(paths.server_key)
    with pytest.raises(certs.CertError, match="not allowed"):
        certs.create_shop_keys(paths, "../evil")


# ----------------------------------------------------------------------------- ingestion


def _folder(tmp_path, log, events: EventLog, settle_s: float = 0.0) -> DropFolder:
    return DropFolder(tmp_path / "drop", events, shop=SHOP, items=set(ITEMS), log=log, settle_s=settle_s)


def test_drop_folder_ingests_each_event_once_across_redrops_and_restarts(tmp_path, log):
    events = EventLog(tmp_path / "events.sqlite")
    folder = _folder(tmp_path, log, events)
    drop = tmp_path / "drop"
    drop.mkdir()
    _events(0, 40).to_csv(drop / "a.csv", index=False)
    _events(30, 20).to_parquet(drop / "b.parquet")  # overlaps a.csv by 10 events
    (drop / "c.csv.part").write_text("being written")  # ignored until renamed
    report = folder.poll()
    assert (report.files, report.rows, report.new_events, report.duplicates) == (2, 60, 50, 10)
    assert events.count() == 50 and events.head == 50
    assert (drop / "c.csv.part").exists() and sorted(p.name for p in (drop / "processed").iterdir()) == ["a.csv", "b.parquet"]
    # the same bytes dropped again: recognised, nothing counted
    shutil.copy(drop / "processed" / "a.csv", drop / "a.csv")
    assert not folder.poll().rows and events.count() == 50
    # a crash after the commit but before the move: the restarted daemon just moves the file
    _events(50, 10).to_csv(drop / "d.csv", index=False)
    frame = pd.read_csv(drop / "d.csv", dtype=str)
    from fedgraph.deploy.ingest import check_events, file_sha256

    events.ingest(check_events(frame, shop=SHOP, items=set(ITEMS), source="d.csv"), source=file_sha256(drop / "d.csv"), name="d.csv")
    events.close()
    events = EventLog(tmp_path / "events.sqlite")  # "restart"
    folder = _folder(tmp_path, log, events)
    folder.poll()
    assert events.count() == 60 and not (drop / "d.csv").exists()
    ids = [r[0] for r in sqlite3.connect(tmp_path / "events.sqlite").execute("SELECT event_id FROM events")]
    assert sorted(ids) == [f"e{k:06d}" for k in range(60)]


def test_malformed_files_are_quarantined_with_a_reason_and_ingestion_goes_on(tmp_path, log):
    events = EventLog(tmp_path / "events.sqlite")
    folder = _folder(tmp_path, log, events)
    drop = tmp_path / "drop"
    drop.mkdir()
    text = _events(0, 10).to_csv(index=False)
    (drop / "half.csv").write_text(text[:-20])  # the writer died mid-row
    (drop / "junk.parquet").write_bytes(b"PAR1 not really")
    bad_item = _events(100, 5)
    bad_item.loc[3, "item"] = "no-such-item"
    bad_item.to_csv(drop / "unknown_item.csv", index=False)
    _events(200, 8).to_csv(drop / "good.csv", index=False)
    report = folder.poll()
    assert report.quarantined == 3 and report.new_events == 8
    q = drop / "quarantine"
    assert {p.name for p in q.iterdir()} == {
        "half.csv",
        "junk.parquet",
        "unknown_item.csv",
        "half.csv.reason.txt",
        "junk.parquet.reason.txt",
        "unknown_item.csv.reason.txt",
    }
    assert "no-such-item" in (q / "unknown_item.csv.reason.txt").read_text()
    lines = [x for x in _log_lines(tmp_path) if x["event"] == "file_quarantined"]
    assert {x["file"] for x in lines} == {"half.csv", "junk.parquet", "unknown_item.csv"}
    assert all(x["level"] == "error" and "drop it into" in x["msg"] for x in lines)
    assert events.counts()["files_quarantined"] == 3
    # the operator fixes the file and drops it again: its events arrive, once
    _events(0, 10).to_csv(drop / "half-fixed.csv", index=False)
    folder.poll()
    assert events.count() == 18


def test_drop_folder_waits_until_a_file_stops_changing(tmp_path, log):
    events = EventLog(tmp_path / "events.sqlite")
    folder = _folder(tmp_path, log, events, settle_s=0.5)
    drop = tmp_path / "drop"
    drop.mkdir()
    _events(0, 5).to_csv(drop / "new.csv", index=False)
    assert not folder.poll().files and (drop / "new.csv").exists()
    time.sleep(0.6)
    assert folder.poll().new_events == 5


def test_sqlite_table_is_read_incrementally_and_bad_rows_are_set_aside(tmp_path, log):
    src = tmp_path / "shop.db"
    db = sqlite3.connect(src)
    first = _events(0, 12)
    first.loc[5, "kind"] = "wishlist"
    first.to_sql("events", db, index=False)
    db.commit()
    events = EventLog(tmp_path / "events.sqlite")
    table = SqliteTable(src, "events", events, shop=SHOP, items=set(ITEMS), log=log, batch_rows=5)
    report = table.poll()
    assert report.new_events == 11 and events.counts()["bad_rows"] == 1
    assert events.offset(SqliteTable.OFFSET_KEY) == 12
    _events(12, 7).to_sql("events", db, index=False, if_exists="append")
    db.commit()
    events.close()
    events = EventLog(tmp_path / "events.sqlite")  # restart: continues from the committed rowid
    SqliteTable(src, "events", events, shop=SHOP, items=set(ITEMS), log=log).poll()
    assert events.count() == 18 and events.counts()["bad_rows"] == 1
    assert any(x["event"] == "row_rejected" and "wishlist" in x["msg"] for x in _log_lines(tmp_path))


def test_a_sqlite_table_source_ingests_search_rows_with_null_item_and_weight(tmp_path, log):
    """Review of issue 14.4: the table source dropped the query column and turned NULL into "None"."""
    src = tmp_path / "shop.db"
    db = sqlite3.connect(src)
    rows = _events(0, 4).assign(query=None)
    rows.loc[4] = ["q1", "u1", None, "2024-01-01 05:00:00", "search", None, "garden decoration"]
    rows.to_sql("events", db, index=False)
    db.commit()
    db.close()
    events = EventLog(tmp_path / "events.sqlite")
    report = SqliteTable(src, "events", events, shop=SHOP, items=set(ITEMS), log=log).poll()
    assert report.new_events == 5 and events.counts()["bad_rows"] == 0
    assert events.all_searches(SHOP)["query"].tolist() == ["garden decoration"] and len(events.all_events(SHOP)) == 4
    events.close()


# ----------------------------------------------------------------------------- graph maintenance


def test_graph_updates_touch_only_affected_users_and_record_model_and_offset(tmp_path):
    from fedgraph.deploy.shop_state import Catalog, GraphUpdater, ShopPaths, save_global_model, write_run_dir
    from fedgraph.features import feature_size
    from fedgraph.federation.run_dir import RunDir
    from fedgraph.graph import GraphStore

    config = RunConfig.from_dict({"model": {"dim": 8, "hidden": 8}, "train": {"device": "cpu"}, "evaluation": {"history": 8}})
    paths = ShopPaths(tmp_path / "state")
    write_run_dir(paths, config, [SHOP])
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "shop": SHOP,
            "item": ITEMS,
            "title": [f"t{i}" for i in ITEMS],
            "description": "",
            "category": [["a", "b", "c"][k % 3] for k in range(len(ITEMS))],
            "price": 1.0,
        }
    )
    catalog = Catalog(SHOP, frame, rng.normal(size=(len(ITEMS), feature_size(384, hops=1))).astype(np.float32))
    events = EventLog(paths.events)
    events.ingest(_events(0, 50, users=5).assign(shop=SHOP).pipe(_canonical), source="s1", name="s1")
    updater = GraphUpdater(paths, catalog, config, events)
    step = updater.step()
    assert step["kind"] == "rebuild" and step["users"] == 5 and step["model_version"].startswith("init")
    store = GraphStore(paths.graph)
    assert store.summary(SHOP)["n_users"] == 5
    before = {u: store.user_recommendations(SHOP, u, k=3) for u in ("u1", "u2")}
    # new events of u1 and a new user u9
    new = _events(50, 6, users=1).assign(user=["u1", "u1", "u1", "u9", "u9", "u9"])
    events.ingest(new.assign(shop=SHOP).pipe(_canonical), source="s2", name="s2")
    step = updater.step()
    assert step["kind"] == "update" and step["users"] == 2 and step["event_offset"] == 56
    rows = dict(((u, o) for u, _, _, o in store.iter_nodes(SHOP, "user")))
    assert rows["u1"] == "56" and rows["u9"] == "56" and rows["u2"] == "50"  # untouched users keep their offset
    assert store.user_recommendations(SHOP, "u2", k=3) == before["u2"]
    assert store.user_interests(SHOP, "u9") and store.summary(SHOP)["n_users"] == 6
    assert updater.step() is None  # nothing new
    # a new global model: everyone is re-embedded with it, the model version is on every edge
    model = RunDir.at(paths.run).new_model()
    state = {k: v + 0.01 for k, v in model.state_dict().items()}
    version, _ = save_global_model(paths, state, 3)
    step = updater.step()
    assert step["kind"] == "rebuild" and step["model_version"] == version
    assert {r[3] for r in store.iter_edges(SHOP, "interested_in")} == {version}
    assert {r[1] for r in store.iter_nodes(SHOP, "user")} == {version}
    # an older model arriving late does not replace the newer one
    assert save_global_model(paths, model.state_dict(), 2) == (save_global_model(paths, model.state_dict(), 2)[0], False)
    store.close()
    updater.close()
    events.close()


def _canonical(df: pd.DataFrame) -> pd.DataFrame:
    from fedgraph.deploy.ingest import check_events

    return check_events(df.drop(columns=["shop"]), shop=SHOP, items=set(ITEMS), source="test")


# ----------------------------------------------------------------------------- configs, logs


def test_shop_config_errors_say_what_to_fix(tmp_path):
    p = tmp_path / "shop.toml"
    p.write_text('[shop]\nname = "berlin"\n[source]\ncatalog = "c.csv"\n')
    with pytest.raises(ConfigError, match="ca_cert and server.auth_key are required"):
        ShopConfig.load(p)
    p.write_text('[shop]\nname = "berlin"\n[source]\ncatalog = "c.csv"\nkind = "ftp"\n[server]\ninsecure = true\n')
    with pytest.raises(ConfigError, match="source.kind must be 'folder' or 'sqlite'"):
        ShopConfig.load(p)
    p.write_text('[shop]\nname = "berlin"\nstate = "x"\n')
    with pytest.raises(ConfigError, match="unknown key shop.state"):
        ShopConfig.load(p)
    s = tmp_path / "server.toml"
    s.write_text("[server]\nport = 9443\n")
    with pytest.raises(ConfigError, match="server.shops must list"):
        ServerConfig.load(s)


def test_logs_are_json_lines_with_levels(tmp_path, log):
    log.info("file_ingested", "a.csv: 3 rows", file="a.csv", rows=3)
    log.error("file_quarantined", "b.csv: bad", file="b.csv")
    lines = _log_lines(tmp_path)
    assert [(x["level"], x["event"]) for x in lines] == [("info", "file_ingested"), ("error", "file_quarantined")]
    assert lines[0]["rows"] == 3 and lines[0]["ts"].endswith("Z")


def test_status_without_a_daemon_reports_stopped_and_no_ledger(tmp_path):
    from fedgraph.deploy.status import collect, render

    certs.init_federation(tmp_path / "certs", shops=[SHOP])
    p = tmp_path / "shop.toml"
    p.write_text(
        f'[shop]\nname = "{SHOP}"\n[source]\ncatalog = "c.csv"\n[server]\nca_cert = "certs/ca.pem"\nauth_key = "certs/shops/{SHOP}/auth.key"\n'
    )
    info = collect(ShopConfig.load(p))
    assert info["daemon"] == "stopped" and info["connected"] is False and info["privacy"] == "n/a (no DP ledger)"
    text = render(info)
    assert "NOT connected" in text and "0 ingested" in text and "privacy budget  n/a (no DP ledger)" in text


def test_status_command_reads_state_without_importing_torch(tmp_path):
    """`fedgraph client status` is what an operator (and monitoring) runs: it took 8-14 s when it
    imported torch and Opacus through the CLI's audit command, the shop-state module and the
    accountant. It reads files only, so none of those may be imported."""
    import subprocess
    import sys

    from fedgraph.privacy import PrivacyLedger

    certs.init_federation(tmp_path / "certs", shops=[SHOP])
    p = tmp_path / "shop.toml"
    p.write_text(
        f'[shop]\nname = "{SHOP}"\n[source]\ncatalog = "c.csv"\n[server]\nca_cert = "certs/ca.pem"\nauth_key = "certs/shops/{SHOP}/auth.key"\n'
    )
    cfg = ShopConfig.load(p)
    ledger = PrivacyLedger(cfg.state_dir / "run" / "privacy" / SHOP, key_path=cfg.ledger_key_path)
    ledger.append("plan", shop=SHOP, target_epsilon=8.0)
    ledger.append("round", shop=SHOP, round=3, epsilon=2.5, target_epsilon=8.0, delta=1e-5)
    probe = (
        "import sys\nfrom fedgraph.cli import main\ncode = main(['client', 'status', '--config', sys.argv[1], '--json'])\n"
        "heavy = sorted(m for m in ('torch', 'opacus', 'transformers', 'torch_geometric') if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\nsys.exit(code)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(p)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stderr, out.stderr[-500:]
    info = json.loads(out.stdout)
    assert info["privacy"].startswith("ε 2.500 spent of 8, 5.500 left") and info["daemon"] == "stopped"


def test_warm_worker_runtime_calls_never_signal_the_daemon(monkeypatch):
    """Flower's own retry/heartbeat helpers SIGINT their process on HTTP 401 (a task whose
    SuperNode restarted); inside the daemon that would stop the shop. Ours give up instead."""
    import signal
    import threading

    import httpx

    from fedgraph.deploy import warm

    sent = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append(sig))
    monkeypatch.setattr(signal, "raise_signal", lambda sig: sent.append(sig))

    def status_error(code: int):
        request = httpx.Request("POST", "http://127.0.0.1:1/v1/runtime/pull-object")
        return httpx.HTTPStatusError("x", request=request, response=httpx.Response(code, request=request))

    calls = []

    def unauthorized():
        calls.append(1)
        raise status_error(401)

    invoker = warm.in_process_retry_invoker(threading.Event(), max_time=5)
    t0 = time.monotonic()
    with pytest.raises(httpx.HTTPStatusError):
        invoker.invoke(unauthorized)
    assert len(calls) == 1 and time.monotonic() - t0 < 1  # gave up at once, no retries

    flaky = iter([httpx.ConnectError("down"), status_error(503), "ok"])

    def recovering():
        value = next(flaky)
        if isinstance(value, Exception):
            raise value
        return value

    assert warm.in_process_retry_invoker(threading.Event(), max_time=30).invoke(recovering) == "ok"

    class Client:
        def __init__(self, exc):
            self.exc = exc

        def SendTaskHeartbeat(self, request):  # noqa: N802 - Flower's name
            raise self.exc

    assert warm._task_heartbeat_fn(Client(status_error(401)))() is True  # stop retrying, no signal
    assert warm._task_heartbeat_fn(Client(httpx.ConnectError("down")))() is False  # retried
    assert sent == []


class _ExitedProcess:
    def poll(self):
        return 0


def test_supernode_counts_as_reconnected_when_it_receives_a_message(tmp_path, log):
    """Flower does not always print "Connection successful" after a SuperLink restart; a message
    received from the SuperLink must still mark the SuperNode connected, or the daemon's
    reconnect watchdog restarts it mid-task (seen: the task's token then fails with HTTP 401)."""
    from fedgraph.deploy.daemon import SuperNodeSupervisor

    console = tmp_path / "supernode.log"
    console.write_text(
        "\x1b[93mWARNING \x1b[0m:   Connection attempt failed, retrying in 7.07 seconds\n"
        "\x1b[92mINFO \x1b[0m:      Run ID 1 is not in `RUNNING` status. Ignoring reply message 03.\n"
        "\x1b[92mINFO \x1b[0m:      Receiving: train message (ID: def4)\n"
    )
    sup = SuperNodeSupervisor(None, tmp_path, 0, log, console)
    sup.state = "disconnected"
    sup._read(_ExitedProcess(), 0)
    assert sup.state == "connected" and sup.connected_since is not None
    assert "supernode_reconnected" in (tmp_path / "log.jsonl").read_text()

    quiet = SuperNodeSupervisor(None, tmp_path, 0, log, tmp_path / "retrying.log")
    (tmp_path / "retrying.log").write_text("WARNING :   Connection attempt failed, retrying in 0.48 seconds\n")
    quiet.state = "disconnected"
    quiet._read(_ExitedProcess(), 0)
    assert quiet.state == "disconnected"  # retrying is not talking to the SuperLink


def test_dropped_message_ids_reach_the_warm_worker_which_gives_the_task_up(tmp_path, log):
    """After a SuperLink restart the SuperNode creates a task for a message of the old run, then
    drops the message ("... Ignoring message <id>"). The warm worker must give that task up as soon
    as the line appears, not after its 30 s pull bound (it held the new run's round behind it)."""
    import threading

    from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError, pull_objects

    from fedgraph.deploy import warm
    from fedgraph.deploy.daemon import SuperNodeSupervisor

    console = tmp_path / "supernode.log"
    console.write_text(
        "\x1b[92mINFO \x1b[0m:      Run ID 10 is not in `RUNNING` status. Ignoring reply message 03.\n"
        "\x1b[92mINFO \x1b[0m:      Run ID 10 is not in `RUNNING` status. Ignoring message fb6333.\n"
    )
    sup = SuperNodeSupervisor(None, tmp_path, 0, log, console)
    sup._read(_ExitedProcess(), 0)
    assert sup.ignored_messages == {"fb6333"}  # a dropped *reply* is no task of ours

    ignored: set[str] = set()
    pulls = []

    def never_there(object_id: str) -> bytes:
        pulls.append(object_id)
        raise ObjectUnavailableError(object_id)

    pull = warm._pull_unless_dropped(never_there, "m1", 10, ignored)
    threading.Timer(0.3, ignored.add, args=("m1",)).start()
    t0 = time.monotonic()
    with pytest.raises(warm.MessageDropped, match="m1"):
        pull_objects(["m1", "o2"], pull_object_fn=pull, max_time=30)
    assert time.monotonic() - t0 < 5 and pulls  # it was retrying, then stopped on the line


_COUNT_SIGTERMS = """
import signal, sys, time
seen = []
signal.signal(signal.SIGTERM, lambda s, f: seen.append(s))
open(sys.argv[1], "w").write("ready")
start = time.monotonic()
while not seen and time.monotonic() - start < 30:
    time.sleep(0.02)
time.sleep(1.5)  # any further SIGTERM arrives in this window
open(sys.argv[2], "w").write(str(len(seen)))
sys.exit(7)
"""


def _wait_for(path, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_guard_turns_repeated_stop_signals_into_one_sigterm(tmp_path):
    """Flower's SuperNode handles one SIGTERM gracefully (it tells the SuperLink it leaves) and is
    killed by a second; the guard in front of it must pass on exactly one, and its exit code."""
    import signal
    import subprocess
    import sys

    ready, count = tmp_path / "ready", tmp_path / "count"
    guard = subprocess.Popen([sys.executable, "-m", "fedgraph.deploy.guard", sys.executable, "-c", _COUNT_SIGTERMS, str(ready), str(count)])
    _wait_for(ready)
    for _ in range(3):
        guard.send_signal(signal.SIGTERM)
        time.sleep(0.1)
    assert guard.wait(timeout=30) == 7
    assert count.read_text() == "1"


def test_supernode_of_a_killed_multithreaded_daemon_gets_one_sigterm(tmp_path):
    """Linux sends a child its parent-death signal each time the child is re-parented: when the
    thread that started it ends, and again when the rest of the process dies. A shop daemon (many
    threads) killed outright signalled its SuperNode several times, and the second SIGTERM killed
    the SuperNode before it told the SuperLink it was leaving (the round then waited 60 s for missed
    heartbeats). Through the guard the SuperNode gets one. (Without the guard this parent delivers
    two: the test fails.)"""
    import signal
    import subprocess
    import sys

    ready, count = tmp_path / "ready", tmp_path / "count"
    daemon_like = f"""
import os, sys, threading, time
from fedgraph.runtime import processes
def start():  # from a thread that then ends, as a supervisor thread might
    cmd = [sys.executable, "-m", "fedgraph.deploy.guard", sys.executable, "-c", {_COUNT_SIGTERMS!r}, {str(ready)!r}, {str(count)!r}]
    processes.spawn(cmd, env=dict(os.environ))
    time.sleep(1.0)
threading.Thread(target=start).start()
time.sleep(60)
"""
    daemon = subprocess.Popen([sys.executable, "-c", daemon_like])
    try:
        _wait_for(ready)
        time.sleep(1.5)  # the starting thread has ended: one re-parenting, one signal
        daemon.send_signal(signal.SIGKILL)  # the process dies: another
        daemon.wait(timeout=10)
        _wait_for(count)
        assert count.read_text() == "1"
    finally:
        daemon.kill()


def test_stopping_a_process_tree_reaches_children_in_other_sessions(tmp_path):
    """Flower's SuperLink starts its SuperExec (and that the ServerApp) in sessions of their own:
    stopping the SuperLink's process group left the ServerApp running after the server stopped."""
    import sys

    from fedgraph.runtime import processes

    pid_file = tmp_path / "grandchild.pid"
    parent = f"""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
open({str(pid_file)!r}, "w").write(str(child.pid))
time.sleep(120)
"""
    proc = processes.spawn([sys.executable, "-c", parent], env=dict(os.environ))
    _wait_for(pid_file)
    grandchild = int(pid_file.read_text())
    assert grandchild in processes.descendants(proc.pid)
    processes.stop_tree(proc, grace_s=5)
    assert proc.poll() is not None
    assert not processes._signal(grandchild, 0), "the grandchild in its own session is still running"


def test_serving_features_depend_only_on_the_users_own_events_as_in_training(tmp_path):
    """Issue 12.8: the daemon's graph measured recency from the shop's newest event, so one customer's
    recommendations moved when another customer bought something; training measured it from the
    user's own latest event. Both now use fedgraph.shop.edge_attributes."""
    from fedgraph.deploy.shop_state import Catalog, GraphUpdater, ShopPaths, write_run_dir
    from fedgraph.features import feature_size
    from fedgraph.graph import GraphStore
    from fedgraph.shop import edge_attributes

    attr = edge_attributes(
        np.array(["a", "a", "b"]), np.array([0.0, 86400.0 * 60, 10.0]), np.ones(3), np.array([0, 2, 1]), recency_halflife_days=60.0
    )
    assert attr[:, 0] == pytest.approx([0.5, 1.0, 1.0])  # each user's own latest event is fresh, whatever the others did
    assert attr[:, 1] == pytest.approx(np.log1p(1.0)) and attr[[0, 1, 2], [2, 4, 3]].tolist() == [1.0, 1.0, 1.0]
    config = RunConfig.from_dict({"model": {"dim": 8, "hidden": 8}, "train": {"device": "cpu"}, "evaluation": {"history": 8}})
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "shop": SHOP,
            "item": ITEMS,
            "title": [f"t{i}" for i in ITEMS],
            "description": "",
            "category": [["a", "b", "c"][k % 3] for k in range(len(ITEMS))],
            "price": 1.0,
        }
    )
    catalog = Catalog(SHOP, frame, rng.normal(size=(len(ITEMS), feature_size(384, hops=1))).astype(np.float32))
    base = _events(0, 40, users=4)
    later = _events(40, 3, users=1, t0="2025-06-01").assign(user="u9")  # another customer, a year later
    recs = {}
    for name, frames in (("alone", [base]), ("with_later", [base, later])):
        paths = ShopPaths(tmp_path / name)
        write_run_dir(paths, config, [SHOP])
        events = EventLog(paths.events)
        for i, f in enumerate(frames):
            events.ingest(f.assign(shop=SHOP).pipe(_canonical), source=f"s{i}", name=f"s{i}")
        updater = GraphUpdater(paths, catalog, config, events)
        updater.step()
        store = GraphStore(paths.graph)
        recs[name] = {u: store.user_recommendations(SHOP, u, k=5) for u in ("u1", "u2")}
        store.close()
        updater.close()
        events.close()
    assert recs["alone"]["u1"] and recs["alone"] == recs["with_later"]


def _shop_config(tmp_path, extra: str = "") -> ShopConfig:
    certs.init_federation(tmp_path / "certs", shops=[SHOP])
    p = tmp_path / "shop.toml"
    p.write_text(
        f'[shop]\nname = "{SHOP}"\n{extra}[source]\ncatalog = "c.csv"\n[server]\nca_cert = "certs/ca.pem"\n'
        f'auth_key = "certs/shops/{SHOP}/auth.key"\n'
    )
    return ShopConfig.load(p)


def test_a_deployed_shops_ledger_key_lives_outside_its_state_dir_so_deleting_the_ledger_is_detected(tmp_path):
    """Issue 12.11: with the HMAC key beside the ledger, anyone who can write the state directory
    could rewrite a consistent chain or delete all three files (ε back to 0). In a deployment the
    key lives outside the state directory (default: beside the shop's auth key); a deleted ledger
    whose key remains stops the shop."""
    from fedgraph.deploy.shop_app import bind_ledger_key
    from fedgraph.privacy import PrivacyLedger
    from fedgraph.privacy.ledger import LedgerTamperedError

    cfg = _shop_config(tmp_path)
    assert cfg.ledger_key_path == (tmp_path / "certs" / "shops" / SHOP / "ledger.key")
    ledger_dir = cfg.state_dir / "run" / "privacy" / SHOP
    bind_ledger_key(cfg)
    ledger = PrivacyLedger(ledger_dir)
    ledger.append("plan", shop=SHOP, target_epsilon=8.0)
    ledger.append("round", shop=SHOP, round=1, epsilon=2.5, target_epsilon=8.0, delta=1e-5)
    assert not list(cfg.state_dir.rglob("ledger.key"))
    assert stat.S_IMODE(cfg.ledger_key_path.stat().st_mode) == 0o600
    for name in ("ledger.jsonl", "ledger.head.json"):
        (ledger_dir / name).unlink()
    with pytest.raises(LedgerTamperedError, match="vanished|missing"):
        PrivacyLedger(ledger_dir).verify()


def test_an_old_ledger_key_in_the_state_dir_is_moved_out_and_a_key_inside_it_is_refused(tmp_path):
    from fedgraph.deploy.shop_app import bind_ledger_key
    from fedgraph.privacy import PrivacyLedger

    cfg = _shop_config(tmp_path)
    ledger_dir = cfg.state_dir / "run" / "privacy" / SHOP
    old = PrivacyLedger(ledger_dir)  # written before the key moved out (no binding)
    old.append("plan", shop=SHOP, target_epsilon=8.0)
    key = (ledger_dir / "ledger.key").read_bytes()
    bind_ledger_key(cfg)
    assert not (ledger_dir / "ledger.key").exists() and cfg.ledger_key_path.read_bytes() == key
    assert [e["kind"] for e in PrivacyLedger(ledger_dir).verify()] == ["plan"]
    with pytest.raises(ConfigError, match="outside shop.state_dir"):
        _shop_config(tmp_path / "b", extra='ledger_key = "state/ledger.key"\n')


def test_a_new_runs_global_model_replaces_a_later_round_of_the_old_run(tmp_path):
    """Issue 13.4: the shop kept the stored model while its round was higher, so after the server
    started a new run the shop ignored the new run's models until its round passed the old one's."""
    from fedgraph.deploy.shop_state import ShopPaths, load_global_model, save_global_model

    paths = ShopPaths(tmp_path / "state")
    old, new = {"w": torch.ones(2)}, {"w": torch.zeros(2)}
    save_global_model(paths, old, 9, run_id=111)
    assert save_global_model(paths, {"w": torch.full((2,), 2.0)}, 3, run_id=111)[1] is False  # an older round of the same run
    version, fresh = save_global_model(paths, new, 1, run_id=222)
    assert fresh is True
    stored = load_global_model(paths)
    assert stored["run_id"] == 222 and stored["round"] == 1 and torch.equal(stored["state_dict"]["w"], new["w"])


def test_a_server_that_stops_with_an_error_says_so_in_server_jsonl(tmp_path, capsys):
    """Issue 13.5: failures reached the terminal only; server.jsonl held info lines even for runs
    that stopped, so monitoring by level missed them."""
    from fedgraph.cli import main

    s = tmp_path / "server.toml"
    s.write_text(f'[server]\nport = 9443\nshops = ["{SHOP}"]\ncerts = "no-certs-here"\n')
    assert main(["server", "start", "--config", str(s)]) != 0
    lines = [json.loads(x) for x in (tmp_path / "server-state" / "logs" / "server.jsonl").read_text().splitlines()]
    errors = [x for x in lines if x["level"] == "error"]
    assert errors and errors[-1]["event"] == "server_failed" and "no-certs-here" in errors[-1]["msg"]


class _ExitedWith:
    def __init__(self, code):
        self.returncode = code

    def poll(self):
        return self.returncode


def _shop_cfg(tmp_path, insecure=False):
    from fedgraph.deploy.demo import make_demo
    from fedgraph.deploy.settings import ShopConfig

    demo = make_demo(tmp_path / "demo", shops=3, port=9999)
    cfg = ShopConfig.load(demo.shop_config(demo.shops[0]))
    cfg.server.insecure = insecure
    return cfg


def test_a_wrong_ca_is_reported_as_a_certificate_problem_not_as_enrolment(tmp_path, log):
    """Issue 13.5: the lines a SuperNode prints when the SuperLink's certificate is not signed by the
    shop's CA (captured from flower-supernode 1.42); the daemon said "Is shop … enrolled?"."""
    from fedgraph.deploy.daemon import SuperNodeSupervisor

    console = tmp_path / "supernode.log"
    console.write_text(
        "\x1b[91mERROR \x1b[0m:     SSL/TLS handshake error detected.\n"
        "\x1b[91mERROR \x1b[0m:     Exit Code: 305\n"
        "Failed to initialize the connection to the SuperLink.\n"
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate (_ssl.c:1006)\n"
        "The SuperNode could not establish a connection to the SuperLink.\n"
    )
    cfg = _shop_cfg(tmp_path)
    sup = SuperNodeSupervisor(cfg, tmp_path, 0, log, console)
    sup.state = "connecting"
    sup._read(_ExitedWith(305), 0)  # what the output thread sees
    sup.process, sup._reader = _ExitedWith(305), threading.Thread(target=lambda: None)
    sup._reader.start()
    sup._next_start = float("inf")  # check() must not start a real SuperNode
    sup.check(superlink_up=True)
    events = _log_lines(tmp_path)
    refused = [e for e in events if e["event"] == "supernode_tls_failed"]
    assert refused and refused[-1]["level"] == "error", events
    msg = refused[-1]["msg"]
    assert "CERTIFICATE_VERIFY_FAILED" in msg and "server.ca_cert" in msg and str(cfg.resolve(cfg.server.ca_cert)) in msg
    assert "enrolled" not in msg
    assert sup.state == "certificate not trusted"


def test_an_insecure_shop_against_a_tls_server_says_so_instead_of_connecting_forever(tmp_path, log):
    from fedgraph.deploy.daemon import SuperNodeSupervisor

    console = tmp_path / "supernode.log"
    console.write_text(
        "\x1b[93mWARNING \x1b[0m:   Option `--insecure` was set. Starting insecure channel to 127.0.0.1:33235.\n"
        + "".join(f"\x1b[93mWARNING \x1b[0m:   Connection attempt failed, retrying in {s} seconds\n" for s in (0.37, 1.44, 0.77, 0.19))
    )
    sup = SuperNodeSupervisor(_shop_cfg(tmp_path, insecure=True), tmp_path, 0, log, console)
    sup.state = "connecting"
    sup._read(_ExitedProcess(), 0)
    assert sup.state == "cannot connect"
    failed = [e for e in _log_lines(tmp_path) if e["event"] == "supernode_cannot_connect"]
    assert len(failed) == 1 and failed[0]["level"] == "error"
    assert "server.insecure = true" in failed[0]["msg"] and "TLS" in failed[0]["msg"]


def test_a_drop_file_with_search_rows_is_ingested_with_its_queries_and_forgotten_with_its_customer(tmp_path, log):
    """Issue 14.4: search rows (kind "search", no item, a query column) are stored beside the
    interactions, kept out of the interaction views, and go with the customer on ``forget``."""
    from fedgraph.data.loaders import DataValidationError
    from fedgraph.deploy.ingest import check_events

    frame = _events(0, 6)
    frame["query"] = ""
    searches = pd.DataFrame(
        {"event_id": ["q1", "q2"], "user": ["u1", "u2"], "item": ["", ""], "timestamp": ["2024-01-01 00:30:00"] * 2}
    ).assign(kind="search", weight="", query=["garden decoration", "oak cutting board"])
    frame = pd.concat([frame.iloc[:2], searches, frame.iloc[2:]], ignore_index=True)
    drop = tmp_path / "drop"
    drop.mkdir()
    frame.to_csv(drop / "a.csv", index=False)
    events = EventLog(tmp_path / "events.sqlite")
    report = _folder(tmp_path, log, events).poll()
    assert (report.rows, report.new_events) == (8, 8)
    assert events.counts()["searches"] == 2 and len(events.all_events(SHOP)) == 6
    assert "search" not in set(events.histories(["u1", "u2"])["kind"])
    got = events.all_searches(SHOP)
    assert got[["user", "query"]].values.tolist() == [["u1", "garden decoration"], ["u2", "oak cutting board"]]
    events.forget_user("u1")
    assert list(events.all_searches(SHOP)["user"]) == ["u2"]
    events.close()
    # An unknown item after a search row is named by its row in the file, searches counted.
    bad = frame.copy()
    bad.loc[5, "item"] = "nope"
    with pytest.raises(DataValidationError, match=r"b.csv, row 6, column 'item'"):
        check_events(bad, shop=SHOP, items=set(ITEMS), source="b.csv")


def test_an_event_log_written_before_searches_gains_the_query_column(tmp_path):
    path = tmp_path / "events.sqlite"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE, user TEXT NOT NULL, "
        "item TEXT NOT NULL, ts INTEGER NOT NULL, kind TEXT NOT NULL, weight REAL NOT NULL, source TEXT NOT NULL, ingested_at REAL NOT NULL)"
    )
    old.execute(
        "INSERT INTO events (event_id, user, item, ts, kind, weight, source, ingested_at) VALUES ('e1', 'u1', 'i001', 0, 'view', 1, 's', 0)"
    )
    old.commit()
    old.close()
    events = EventLog(path)
    assert len(events.all_events(SHOP)) == 1 and len(events.all_searches(SHOP)) == 0 and events.counts()["searches"] == 0
    events.close()

"""Privacy in the deployment path (no network): what a shop daemon accepts, refuses and sends.

Each test here reproduces one finding of the deployment-privacy review (issue 12); the numbers
in the names refer to its items.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, Metadata, RecordDict

from fedgraph.config import ConfigError, RunConfig
from fedgraph.deploy.demo import make_demo
from fedgraph.deploy.settings import ServerConfig, ShopConfig
from fedgraph.federation.shop_side import ShopRefusal


@pytest.fixture()
def demo(tmp_path, text_cache):
    return make_demo(tmp_path, shops=2, port=9443, rounds=2, cache_dir=text_cache)


def _privacy_table(demo, lines: str) -> None:
    """Set keys of the demo federation's [privacy] table (replacing the demo's own values)."""
    path = demo.root / "federation.toml"
    keys = {line.split("=")[0].strip() for line in lines.splitlines()}
    kept = [line for line in path.read_text().splitlines(keepends=True) if line.split("=")[0].strip() not in keys]
    path.write_text("".join(kept).replace("[privacy]\n", "[privacy]\n" + lines))


def test_12_1_deployments_draw_dp_noise_from_a_csprng_and_refuse_seeded_noise(demo):
    _privacy_table(demo, "enabled = true\nshare_evaluation = false\n")
    shop = ShopConfig.load(demo.shop_config(demo.shops[0]))
    assert shop.run_config().privacy.deterministic_noise is False  # the simulation default (true) does not carry over
    assert ServerConfig.load(demo.server_config).run_config().privacy.deterministic_noise is False
    assert RunConfig.load(demo.root / "federation.toml").privacy.deterministic_noise is True  # simulations: reproducible
    _privacy_table(demo, "deterministic_noise = true\n")
    with pytest.raises(ConfigError, match="deterministic_noise = true seeds the DP noise"):
        ShopConfig.load(demo.shop_config(demo.shops[0])).run_config()
    with pytest.raises(ConfigError, match="deterministic_noise"):
        ServerConfig.load(demo.server_config).run_config()


def _message(kind: str, content: RecordDict) -> Message:
    meta = Metadata(
        run_id=1,
        message_id="m1",
        src_node_id=0,
        dst_node_id=7,
        reply_to_message_id="",
        group_id="1",
        created_at=0.0,
        ttl=60.0,
        message_type=kind,
    )
    return Message(content=content, metadata=meta)


def _context(demo, shop: str) -> SimpleNamespace:
    from fedgraph.deploy.shop_state import model_signature_digest

    config = ShopConfig.load(demo.shop_config(shop)).run_config()
    run_config = {"shops": ",".join(demo.shops), "fedgraph-model": model_signature_digest(config), "run-dir": ""}
    return SimpleNamespace(node_config={"shop-config": str(demo.shop_config(shop))}, run_config=run_config, state=RecordDict())


def _plain(kind: str) -> Message:
    from fedgraph.features import feature_size
    from fedgraph.models import InterestModel

    torch.manual_seed(0)
    state = InterestModel(feature_size(384, hops=1), dim=16, hidden=16).state_dict()
    return _message(kind, RecordDict({"arrays": ArrayRecord(state), "config": ConfigRecord({"server-round": 1})}))


def test_12_4_a_shop_that_requires_secure_aggregation_refuses_plain_train_messages(demo):
    from fedgraph.apps.client_app import train
    from fedgraph.deploy.paths import ShopPaths

    shop = demo.shops[0]
    assert ShopConfig.load(demo.shop_config(shop)).run_config().privacy.secure_aggregation  # the demo's federation: SecAgg+ on
    with pytest.raises(ShopRefusal, match="requires secure aggregation"):
        train(_plain("train"), _context(demo, shop))
    state = ShopPaths(ShopConfig.load(demo.shop_config(shop)).state_dir)
    assert not state.model.exists()  # refused before anything was stored or trained


def test_12_6_a_shop_refuses_evaluate_messages_unless_its_config_opts_in(demo):
    from fedgraph.apps.client_app import evaluate

    path = demo.root / "federation.toml"
    path.write_text(path.read_text().replace("share_evaluation = true\n", ""))  # the deployment default
    shop = demo.shops[0]
    assert ShopConfig.load(demo.shop_config(shop)).run_config().privacy.share_evaluation is False
    with pytest.raises(ShopRefusal, match="does not send evaluation figures"):
        evaluate(_plain("evaluate"), _context(demo, shop))
    _privacy_table(demo, "enabled = true\nshare_evaluation = true\n")
    with pytest.raises(ConfigError, match="share_evaluation = true would send"):
        ShopConfig.load(demo.shop_config(shop)).run_config()


def test_12_7_error_text_stays_in_the_shop_and_refusals_reach_the_server(demo, caplog):
    from fedgraph.deploy.shop_app import local_errors

    @local_errors
    def failing(msg, context):
        raise ValueError("sample rate 0.0625 for 512 users")

    @local_errors
    def refusing(msg, context):
        raise ShopRefusal("one more round would exceed its privacy budget")

    deployed = _context(demo, demo.shops[0])
    with pytest.raises(RuntimeError) as err:
        failing(_plain("train"), deployed)
    assert "512" not in str(err.value) and "0.0625" not in str(err.value) and "shop's own log" in str(err.value)
    assert "512 users" in caplog.text  # kept in the shop's log
    with pytest.raises(ShopRefusal, match="privacy budget"):
        refusing(_plain("train"), deployed)
    with pytest.raises(ValueError, match="512 users"):  # simulation: the operator is the reader
        failing(_plain("train"), SimpleNamespace(node_config={"partition-id": 0}))


def test_12_2_secure_aggregation_runs_with_weight_one_and_sends_no_counts():
    import flwr.compat.common.recorddict_compat as compat

    from fedgraph.federation.secure_aggregation import SHOP_WEIGHT, state_to_fitres

    fitres = compat.recorddict_to_fitres(state_to_fitres({"w": torch.ones(3)}, {"partition-id": 1, "shop-weight": 1.0}), keep_input=True)
    assert fitres.num_examples == SHOP_WEIGHT == 1
    config = RunConfig.load(overrides=["privacy.secure_aggregation=true"])
    assert config.federation.weights(config.privacy) == "uniform"
    with pytest.raises(ConfigError, match="weighting=users sends each shop's exact number of users"):
        RunConfig.load(overrides=["privacy.secure_aggregation=true", "federation.weighting=users"])
    with pytest.raises(ConfigError, match="weighting=users"):
        RunConfig.load(overrides=["privacy.enabled=true", "federation.weighting=users"])


def test_12_11_the_server_refuses_a_shop_whose_ledger_went_backwards():
    """A shop's operator who rewrites its ledger consistently (the HMAC key sits beside it) or deletes
    it passes the shop's own check; the server remembers each shop's ε and ledger length."""
    from fedgraph.federation.rounds import _ledger_regressions

    history = {
        "rounds": [
            {"round": 1, "train": {"a": {"ledger-seq": 1, "epsilon": 2.0}, "b": {"ledger-seq": 1, "epsilon": 2.0}}},
            {"round": 2, "train": {"a": {"ledger-seq": 2, "epsilon": 3.0}}, "budget_exhausted": {"b": {"ledger-seq": 2, "epsilon": 2.0}}},
        ]
    }
    flagged = _ledger_regressions(
        history, {"a": {"ledger-seq": 1, "epsilon": 0.5}, "b": {"ledger-seq": 3, "epsilon": 2.5}, "c": {"ledger-seq": 1, "epsilon": 1.0}}
    )
    assert list(flagged) == ["a"] and "went backwards" in flagged["a"] and "entry 2, ε 3.00 by round 2" in flagged["a"]
    assert _ledger_regressions(history, {"b": {"ledger-seq": 2, "epsilon": 2.0}})  # a replayed entry is not new either


def _global_model(demo, shop: str, server_round: int) -> Message:
    """A plain train message with the federation's initial global model, as the server sends it."""
    from fedgraph.deploy.paths import ShopPaths
    from fedgraph.deploy.shop_state import write_run_dir

    config = ShopConfig.load(demo.shop_config(shop)).run_config()
    server = write_run_dir(ShopPaths(demo.root / "server-view"), config, demo.shops)
    content = RecordDict({"arrays": ArrayRecord(server.new_model().state_dict()), "config": ConfigRecord({"server-round": server_round})})
    return _message("train", content)


def test_12_3_a_deployed_dp_shop_that_gains_customers_between_rounds_keeps_training(demo):
    """The budget plan fixed q and δ from the customer count of round 1, then recomputed both from
    the current count and refused (BudgetError) every round after the shop's first new customer.
    Here the shop's ClientApp trains round 1 on 60 % of its customers, ingests the rest, and
    trains round 2 at the planned q and δ."""
    from fedgraph.apps.client_app import train
    from fedgraph.deploy.ingest import EventLog, check_events
    from fedgraph.privacy import PrivacyLedger

    _privacy_table(demo, "enabled = true\nsecure_aggregation = false\nshare_evaluation = false\n")
    shop = demo.shops[0]
    cfg = ShopConfig.load(demo.shop_config(shop))
    frame = demo.events[shop]
    users = sorted(frame["user"].unique())
    first = frame[frame["user"].isin(users[: int(0.6 * len(users))])]
    log = EventLog(cfg.state_dir / "events.sqlite")
    items = set(frame["item"])
    try:
        log.ingest(check_events(first.astype(str), shop=shop, items=items, source="a.csv"), source="a", name="a.csv")
        reply = train(_global_model(demo, shop, server_round=1), _context(demo, shop))
        log.ingest(check_events(frame.astype(str), shop=shop, items=items, source="b.csv"), source="b", name="b.csv")
        reply2 = train(_global_model(demo, shop, server_round=2), _context(demo, shop))
    finally:
        log.close()
    assert not reply.has_error() and not reply2.has_error()
    entries = PrivacyLedger(cfg.state_dir / "run" / "privacy" / shop, key_path=cfg.ledger_key_path).verify()
    plan, rounds = entries[0], [e for e in entries if e["kind"] == "round"]
    assert [e["round"] for e in rounds] == [1, 2]
    assert {e["sample_rate"] for e in rounds} == {plan["sample_rate"]} and {e["delta"] for e in rounds} == {plan["delta"]}


def test_12_7_a_deployed_dp_shop_sends_no_figure_derived_from_its_size(demo):
    """ε after a round and δ = min(1e-5, 0.1/n) are functions of the shop's customer count n (σ and
    q are planned from it): sending them releases n. A deployed DP shop sends its ledger length,
    the (public) target and its weight only; ε stays in its ledger and `client status`."""
    from fedgraph.apps.client_app import train
    from fedgraph.deploy.ingest import EventLog, check_events

    _privacy_table(demo, "enabled = true\nsecure_aggregation = false\nshare_evaluation = false\n")
    shop = demo.shops[0]
    cfg = ShopConfig.load(demo.shop_config(shop))
    assert cfg.run_config().privacy.report_epsilon is False and RunConfig().privacy.report_epsilon is True
    frame = demo.events[shop]
    log = EventLog(cfg.state_dir / "events.sqlite")
    try:
        log.ingest(check_events(frame.astype(str), shop=shop, items=set(frame["item"]), source="a.csv"), source="a", name="a.csv")
        reply = train(_global_model(demo, shop, server_round=1), _context(demo, shop))
    finally:
        log.close()
    assert set(reply.content["metrics"]) == {"shop-weight", "partition-id", "ledger-seq", "target-epsilon"}

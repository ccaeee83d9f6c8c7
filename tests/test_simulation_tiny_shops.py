"""Shops that cannot train or be evaluated (issue 13.10b): warned about, left out of the rounds."""

from __future__ import annotations

import pandas as pd

from fedgraph.config import RunConfig
from fedgraph.federation.run_dir import RunDir
from fedgraph.simulation import Dataset, prepare


def _dataset() -> Dataset:
    """Shop ``big``: 12 users with 8 items each; shop ``tiny``: 3 customers with one purchase each."""
    events, catalog = [], []
    for shop, users, per_user, items in (("big", 12, 8, 10), ("tiny", 3, 1, 4)):
        catalog += [
            {"shop": shop, "item": f"{shop}-i{i}", "title": f"{shop} thing {i}", "description": "", "category": "c", "price": 1.0 + i}
            for i in range(items)
        ]
        for u in range(users):
            for j in range(per_user):
                events.append(
                    {
                        "event_id": f"{shop}-{u}-{j}",
                        "shop": shop,
                        "user": f"{shop}-u{u}",
                        "item": f"{shop}-i{(u + j) % items}",
                        "timestamp": pd.Timestamp("2011-03-01") + pd.Timedelta(days=j),
                        "kind": "purchase",
                        "weight": 1.0,
                    }
                )
    return Dataset(pd.DataFrame(events), pd.DataFrame(catalog), {"source": "test"})


def test_a_shop_that_cannot_train_is_named_and_left_out_of_the_rounds(tmp_path, text_cache):
    config = RunConfig.load(None, [f"features.cache_dir='{text_cache}'", "federation.min_train_shops=1"])
    config.save(tmp_path / "config.toml")
    run = RunDir.at(tmp_path)
    lines: list[str] = []
    shops = prepare(config, run, lines.append, dataset=_dataset())
    assert shops == ["big", "tiny"] and run.shop_names == ["big", "tiny"]  # still evaluated and given a graph
    assert run.round_shops == ["big"]
    said = "\n".join(lines)
    assert "tiny" in said and "cannot train (no customer with two or more distinct training items)" in said
    assert "left out of the federated rounds" in said
    assert "no test figure (no customer with both training and test items): tiny" in said
    # The shop side and the server count partitions over the shops in the rounds.
    from fedgraph.federation.shop_side import shop_data

    assert shop_data(run, 0).shop == "big"


def test_too_few_shops_that_can_train_for_min_train_shops_is_a_clear_error(tmp_path, text_cache):
    import pytest

    from fedgraph.config import ConfigError

    config = RunConfig.load(None, [f"features.cache_dir='{text_cache}'", "federation.min_train_shops=2"])
    config.save(tmp_path / "config.toml")
    with pytest.raises(ConfigError, match=r"only 1 shop of 2 can train.*federation.min_train_shops=2"):
        prepare(config, RunDir.at(tmp_path), lambda line: None, dataset=_dataset())
    assert not (tmp_path / "shops" / "index.json").exists()  # not marked prepared: a resume prepares again


def test_that_error_leaves_a_new_run_directory_empty(tmp_path, text_cache, monkeypatch, capsys):
    import fedgraph.simulation as simulation
    from fedgraph.cli import main

    monkeypatch.setattr(simulation, "load_dataset", lambda config: _dataset())
    out = tmp_path / "run"
    assert main(["simulate", "--out", str(out), f"features.cache_dir='{text_cache}'", "federation.min_train_shops=2"]) == 2
    assert "only 1 shop of 2 can train" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_data_where_no_customer_has_a_validation_item_is_refused_before_training(tmp_path, text_cache):
    import pytest

    from fedgraph.config import ConfigError

    config = RunConfig.load(None, [f"features.cache_dir='{text_cache}'", "federation.min_train_shops=1", "data.min_user_items=9"])
    config.save(tmp_path / "config.toml")
    with pytest.raises(ConfigError, match=r"no customer .* validation.*data.min_user_items"):
        prepare(config, RunDir.at(tmp_path), lambda line: None, dataset=_dataset())


def test_a_shop_with_no_validation_users_does_not_drag_the_pooled_validation_figure(tmp_path, text_cache):
    import torch

    from fedgraph.baselines.methods import baseline_settings, pooled_central
    from fedgraph.simulation import load_shops

    config = RunConfig.load(None, [f"features.cache_dir='{text_cache}'", "federation.min_train_shops=1"])
    config.save(tmp_path / "config.toml")
    run = RunDir.at(tmp_path)
    prepare(config, run, lambda line: None, dataset=_dataset())
    said: list[str] = []
    settings = baseline_settings(run)
    pooled_central(
        load_shops(run),
        load_shops(run, final=True),
        run.new_model,
        settings,
        k=20,
        history=8,
        device=torch.device("cpu"),
        max_epochs=1,
        progress=said.append,
    )
    figure = float(said[-1].rsplit(" ", 1)[-1].rstrip(")"))
    assert 0.0 <= figure <= 1.0, said[-1]


def test_the_audit_does_not_call_a_shop_left_out_of_the_rounds_tampered(tmp_path, text_cache):
    """Review of 050a168: a DP shop out of the rounds never opens a ledger; the audit must say it
    was not in the rounds, not that its ledger was removed."""
    from fedgraph.audit.integrity import check_run
    from fedgraph.federation.shop_side import shop_budget, shop_data

    config = RunConfig.load(None, [f"features.cache_dir='{text_cache}'", "federation.min_train_shops=1", "privacy.enabled=true"])
    config.save(tmp_path / "config.toml")
    run = RunDir.at(tmp_path)
    prepare(config, run, lambda line: None, dataset=_dataset())
    shop_budget(run, shop_data(run, 0))  # the shop in the rounds opens its ledger
    report = check_run(run)
    ledger_findings = [x["detail"] for x in report["findings"] if x["check"] == "ledger"]
    assert not [d for d in ledger_findings if d.startswith("tiny")], ledger_findings
    from fedgraph.audit.core import _ledger_state

    assert _ledger_state(report["ledgers"]["tiny"]) == "no ledger (not in the federated rounds: no customer to train on)"


def test_secure_aggregation_over_too_few_shops_that_can_train_is_refused_before_training(tmp_path, text_cache):
    """Review of 050a168: SecAgg+ was checked against the shops in the rounds only when the
    ServerApp started, inside Flower; now prepare refuses it like any other config error."""
    import pytest

    from fedgraph.config import ConfigError

    overrides = [f"features.cache_dir='{text_cache}'", "federation.min_train_shops=1", "privacy.secure_aggregation=true"]
    config = RunConfig.load(None, overrides)
    config.save(tmp_path / "config.toml")
    with pytest.raises(ConfigError, match=r"1 shop of 2 can train .*privacy.secure_aggregation needs at least 2 shops"):
        prepare(config, RunDir.at(tmp_path), lambda line: None, dataset=_dataset())
    assert not (tmp_path / "shops" / "index.json").exists()

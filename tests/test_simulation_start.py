"""`fedgraph simulate` checks everything it can before writing anything (issue 13.8/13.9)."""

from __future__ import annotations

from fedgraph.cli import main
from fedgraph.config import RunConfig

EVENTS = "event_id,shop,user,item,timestamp,kind,weight\n"
CATALOG = "shop,item,title,description,category,price\ns1,i1,Mug,,kitchen,2.5\ns1,i2,Bowl,,kitchen,3\n"


def _files(tmp_path, events_rows):
    events = tmp_path / "events.csv"
    events.write_text(EVENTS + "".join(r + "\n" for r in events_rows), encoding="utf-8")
    catalog = tmp_path / "catalog.csv"
    catalog.write_text(CATALOG, encoding="utf-8")
    return [f"data.events='{events}'", f"data.catalog='{catalog}'", "data.source=files"]


def test_a_failed_data_validation_writes_no_run_directory_and_the_retry_works(tmp_path, capsys):
    out = tmp_path / "run"
    bad = _files(tmp_path, ["e1,s1,u1,i1,2011-03-01,view,1", "e2,s1,u1,i9,2011-03-02,view,1"])  # i9 not in the catalog
    assert main(["simulate", "--out", str(out), *bad]) == 2
    err = capsys.readouterr().err
    assert "i9" in err and "Traceback" not in err
    assert not out.exists(), f"a failed validation left {sorted(p.name for p in out.iterdir())}"
    # The retry with the same --out is not blocked by leftovers: it fails for the same data reason again.
    assert main(["simulate", "--out", str(out), *bad]) == 2
    assert "already holds files" not in capsys.readouterr().err


def test_fewer_shops_than_min_train_shops_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    rows = [f"e{i},s1,u{i % 3},i{1 + i % 2},2011-03-0{1 + i % 9},view,1" for i in range(12)]
    code = main(["simulate", "--out", str(out), *_files(tmp_path, rows), "federation.min_train_shops=2"])
    err = capsys.readouterr().err
    assert code == 2 and "1 shop" in err and "federation.min_train_shops=2" in err and "federation.min_train_shops=1" in err
    assert not out.exists()


def test_a_missing_cuda_device_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    assert main(["simulate", "--config", "configs/smoke.toml", "--out", str(out), "train.device=cuda"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA device" in err and "train.device=auto" in err and "Traceback" not in err
    assert not out.exists()


def test_config_checks_cover_every_numeric_key_with_a_lower_bound():
    """Every int/float key either has a range, or is checked in validate's combination list."""
    from dataclasses import fields

    from fedgraph.config import RANGES

    checked_elsewhere = {
        "data.seed",
        "data.test_fraction",
        "train.rounds",
        "train.local_epochs",
        "train.batch_size",
        "train.lr",
        "train.history",
        "train.positives",
        "train.negatives",
        "train.seed",
        "federation.fraction_train",
        "federation.min_train_shops",
        "federation.simulation_wave",
        "model.temperature",
        "evaluation.k",
        "privacy.target_epsilon",
        "privacy.delta",
        "privacy.max_grad_norm",
        "privacy.noise_multiplier",
        "privacy.client_noise_multiplier",
        "privacy.client_clipping_norm",
        "privacy.client_delta",
        "privacy.secagg_num_shares",
        "privacy.secagg_reconstruction_threshold",
    }
    config = RunConfig()
    numeric = {
        f"{s.name}.{f.name}"
        for s in fields(config)
        for f in fields(getattr(config, s.name))
        if type(getattr(getattr(config, s.name), f.name)) in (int, float)
    }
    assert numeric - set(RANGES) - checked_elsewhere == set()


def test_prepared_shops_carry_each_customers_searches_from_before_the_held_out_period_only(tmp_path):
    """Issue 14.4: every view's queries precede its held-out events; the text cache holds no query."""
    import numpy as np

    from fedgraph.config import RunConfig
    from fedgraph.data.sources import load_dataset
    from fedgraph.federation.run_dir import RunDir
    from fedgraph.shop import ShopData
    from fedgraph.simulation import prepare
    from fedgraph.text import TextEmbedder

    config = RunConfig.load(
        overrides=[
            "data.source=synthetic",
            "data.synthetic_shops=3",
            "data.synthetic_users_per_shop=[20,40]",
            "data.synthetic_items_per_shop=[50,60]",
            "data.synthetic_searches_per_user=3",
            f"features.cache_dir='{tmp_path / 'cache'}'",
        ]
    )
    config.save(tmp_path / "run" / "config.toml")
    run = RunDir.at(tmp_path / "run")
    shops = prepare(config, run, say=lambda _: None)
    searches = load_dataset(config).searches
    assert len(searches)
    embedder = TextEmbedder(cache_dir=tmp_path / "cache", progress=False)
    total = 0
    for shop in shops:
        for path in (run.shop_file(shop), run.final_shop_file(shop)):
            data = ShopData.load(path)
            total += len(data.query_text)
            assert data.query_text.shape[1] == data.text_dim
            np.testing.assert_allclose(np.linalg.norm(data.query_text, axis=1), 1.0, atol=1e-4)
    assert total > 0
    # The test view cuts later than the training view (its held-out period comes after validation).
    fit, final = ShopData.load(run.shop_file(shops[0])), ShopData.load(run.final_shop_file(shops[0]))
    assert list(fit.users) == list(final.users)
    assert (np.diff(fit.query_indptr) <= np.diff(final.query_indptr)).all() and len(fit.query_text) < len(final.query_text)
    # No query reached the item text cache.
    cached = embedder._cache.get([embedder.cache_key(q) for q in searches["query"].unique()])
    assert not cached

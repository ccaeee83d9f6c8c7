"""The synthetic federation generator."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from fedgraph.data import (
    CATALOG_COLUMNS,
    EVENT_COLUMNS,
    TAXONOMY,
    check_events_against_catalog,
    generate_federation,
    validate_catalog,
    validate_events,
)

SMALL = dict(users_per_shop=(20, 300), items_per_shop=(50, 300), events_per_user=(5, 30))


@pytest.fixture(scope="module")
def fed():
    return generate_federation(40, seed=7, **SMALL)


def test_deterministic():
    a = generate_federation(6, seed=3, **SMALL)
    b = generate_federation(6, seed=3, **SMALL)
    for name in ("events", "catalog", "planted"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    c = generate_federation(6, seed=4, **SMALL)
    assert not c.events["item"].equals(a.events["item"]) or len(c.events) != len(a.events)


def test_schema_valid(fed):
    assert list(fed.events.columns) == EVENT_COLUMNS
    assert list(fed.catalog.columns) == CATALOG_COLUMNS
    assert list(fed.planted.columns) == ["shop", "user", "category", "weight"]
    ev = validate_events(fed.events, source="synthetic events")
    cat = validate_catalog(fed.catalog, source="synthetic catalog")
    check_events_against_catalog(ev, cat)
    pd.testing.assert_frame_equal(ev, fed.events)
    pd.testing.assert_frame_equal(cat, fed.catalog)
    assert str(fed.events["timestamp"].dtype) == "datetime64[s]"
    for col in ("event_id", "shop", "user", "item", "kind"):
        assert fed.events[col].dtype == "str"


def test_ids(fed):
    ev = fed.events
    assert ev["shop"].str.fullmatch(r"shop-\d{5}").all()
    assert ev["user"].str.fullmatch(r"u\d{5}").all()
    assert ev["item"].str.fullmatch(r"i\d{5}").all()
    assert ev["event_id"].is_unique
    assert sorted(ev["shop"].unique()) == [f"shop-{k:05d}" for k in range(40)]
    assert fed.catalog.groupby("shop")["item"].apply(lambda s: s.tolist() == [f"i{k:05d}" for k in range(len(s))]).all()


def test_sizes_in_ranges_and_spread():
    fed = generate_federation(200, seed=1, users_per_shop=(20, 2000), items_per_shop=(50, 1000), events_per_user=(5, 8))
    users = fed.events.groupby("shop")["user"].nunique()
    items = fed.catalog.groupby("shop").size()
    per_user = fed.events.groupby(["shop", "user"]).size()
    assert users.min() >= 20 and users.max() <= 2000
    assert items.min() >= 50 and items.max() <= 1000
    assert per_user.min() >= 5 and per_user.max() <= 8
    assert users.max() / users.min() > 20
    # log-uniform: the median is near the geometric mean sqrt(20 * 2000) = 200
    assert 100 < users.median() < 400
    assert 130 < items.median() < 330
    # shop users are exactly u00000..: no gaps
    assert (fed.events.groupby("shop")["user"].max().str[1:].astype(int) + 1 == users).all()


def test_taxonomy_and_text(fed):
    assert 18 <= len(TAXONOMY) <= 25
    cat = fed.catalog
    assert set(cat["category"]) <= set(TAXONOMY)
    shop_cats = cat.groupby("shop")["category"].nunique()
    assert shop_cats.between(3, 8).all()
    # several shops share categories: the taxonomy is common to all
    assert cat.groupby("category")["shop"].nunique().max() >= 10
    for row in cat.sample(200, random_state=0).itertuples():
        spec = TAXONOMY[row.category]
        assert any(row.title.endswith(" " + n) for n in spec.nouns), row.title
        assert any(row.description.endswith(p + ".") for p in spec.phrases), row.description
        assert row.description.split()[0] in ("A", "An")
        noun = row.title.split(" ", 2)[2] if len(row.title.split()) > 2 else ""
        assert noun.lower() in row.description.lower()
    assert (cat["price"] > 0).all()


def test_planted_interests(fed):
    pl = fed.planted
    k = pl.groupby(["shop", "user"]).size()
    assert k.min() >= 1 and k.max() <= 3
    assert np.allclose(pl.groupby(["shop", "user"])["weight"].sum(), 1.0)
    assert (pl["weight"] > 0).all()
    assert not pl.duplicated(["shop", "user", "category"]).any()
    # every user has planted interests, and they are categories the shop sells
    users = fed.events[["shop", "user"]].drop_duplicates()
    assert len(users) == len(k)
    sells = set(zip(fed.catalog["shop"], fed.catalog["category"]))
    assert set(zip(pl["shop"], pl["category"])) <= sells
    # most events hit a planted category (90% by construction, plus chance hits)
    ev = fed.events.merge(fed.catalog[["shop", "item", "category"]], on=["shop", "item"])
    hit = ev.merge(pl, on=["shop", "user", "category"], how="left")["weight_y"].notna()
    assert hit.mean() > 0.85
    # the heaviest interest gets the most events
    top = pl.sort_values("weight", ascending=False).drop_duplicates(["shop", "user"])
    per_cat = ev.groupby(["shop", "user", "category"]).size().rename("n").reset_index()
    best = per_cat.sort_values("n", ascending=False).drop_duplicates(["shop", "user"])
    agree = top.merge(best, on=["shop", "user"], suffixes=("_planted", "_seen"))
    assert (agree["category_planted"] == agree["category_seen"]).mean() > 0.7


def test_timestamps_and_kinds(fed):
    ev = fed.events
    # within a user, rows come in time order, strictly increasing
    diffs = ev.groupby(["shop", "user"])["timestamp"].diff().dropna()
    assert (diffs > pd.Timedelta(0)).all()
    assert set(ev["kind"]) == {"view", "cart", "purchase"}
    assert (ev.loc[ev["kind"] == "view", "weight"] == 1.0).all()
    assert (ev.loc[ev["kind"] == "cart", "weight"] == 2.0).all()
    purchase = ev.loc[ev["kind"] == "purchase", "weight"]
    assert (purchase >= 1).all() and (purchase == np.floor(purchase)).all() and purchase.max() > 1
    assert abs((ev["kind"] == "view").mean() - 0.5) < 0.03


@pytest.mark.parametrize("fraction, expected", [(1.0, {"view"}), (0.0, {"cart", "purchase"})])
def test_view_fraction(fraction, expected):
    fed = generate_federation(3, seed=2, view_fraction=fraction, **SMALL)
    assert set(fed.events["kind"]) == expected


def test_tiny_shops_and_single_interest():
    fed = generate_federation(5, seed=9, users_per_shop=(1, 1), items_per_shop=(2, 2), events_per_user=(1, 1), n_interests_per_user=(3, 3))
    assert len(fed.events) == 5
    assert (fed.catalog.groupby("shop").size() == 2).all()
    # a shop with 2 items sells at most 2 categories, so users get at most 2 interests
    assert fed.planted.groupby(["shop", "user"]).size().max() <= 2
    check_events_against_catalog(validate_events(fed.events), validate_catalog(fed.catalog))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(n_shops=0),
        dict(n_shops=2, users_per_shop=(0, 5)),
        dict(n_shops=2, items_per_shop=(10, 5)),
        dict(n_shops=2, events_per_user=(1.5, 3)),
        dict(n_shops=2, view_fraction=1.5),
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        generate_federation(**kwargs)


def test_thousand_shops_is_fast():
    start = time.perf_counter()
    fed = generate_federation(1000, seed=0, users_per_shop=(20, 200))
    elapsed = time.perf_counter() - start
    assert fed.events["shop"].nunique() == 1000
    assert len(fed.events) > 1_000_000
    assert elapsed < 10.0, f"1,000 shops took {elapsed:.1f} s"

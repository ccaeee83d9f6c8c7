"""The UCI Online Retail adapter: cleaning, event mapping, shop partitioning, catalog."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from fedgraph.data import (
    BUNDLED_ONLINE_RETAIL,
    DataFileNotFoundError,
    DataValidationError,
    check_events_against_catalog,
    derive_category,
    head_noun,
    load_online_retail,
    validate_catalog,
    validate_events,
)
from fedgraph.data.online_retail import (
    CLEANING_RULES,
    MAX_UNIT_PRICE,
    ONLINE_RETAIL_CATEGORIES,
    category_vocabulary,
)

RAW_HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"

# Counts on the bundled file (documented in docs/data.md).
BUNDLED_CLEANING = {
    "rows_read": 541909,
    "drop_cancellation": 9288,
    "drop_nonpositive_quantity": 1336,
    "drop_non_product_code": 2399,
    "drop_missing_customer": 132516,
    "drop_nonpositive_price": 33,
    "drop_empty_description": 0,
    "drop_price_outlier": 2,
    "drop_user_subsample": 0,
    "kept": 396335,
}
BUNDLED_SHOPS = {  # shop: (users, items, events)
    "uk-4": (1018, 3321, 94290),
    "uk-3": (977, 3288, 92468),
    "uk-2": (971, 3215, 83062),
    "uk-1": (950, 3251, 84163),
    "other": (164, 2513, 19514),
    "germany": (94, 1662, 8658),
    "france": (87, 1519, 8034),
    "spain": (29, 1109, 2441),
    "belgium": (24, 768, 1910),
    "switzerland": (20, 937, 1795),
}


def uk_shard(customer: str, shards: int) -> str:
    h = int.from_bytes(hashlib.sha256(customer.encode()).digest()[:8], "big")
    return f"uk-{h % shards + 1}"


@pytest.fixture(scope="module")
def bundled():
    return load_online_retail()


# ----------------------------------------------------------------------------------------
# the bundled file


def test_bundled_file_exists():
    assert BUNDLED_ONLINE_RETAIL.name == "online_retail.csv.gz"
    assert BUNDLED_ONLINE_RETAIL.is_file()
    assert BUNDLED_ONLINE_RETAIL.parent.name == "online_retail_uci"


def test_bundled_cleaning_counts(bundled):
    assert bundled.cleaning == BUNDLED_CLEANING
    assert list(bundled.cleaning) == ["rows_read", *CLEANING_RULES, "kept"]
    drops = sum(v for k, v in bundled.cleaning.items() if k.startswith("drop_"))
    assert bundled.cleaning["rows_read"] - drops == bundled.cleaning["kept"] == len(bundled.events)


def test_bundled_shops(bundled):
    shops = bundled.shops
    assert list(shops.columns) == ["shop", "countries", "users", "items", "events"]
    assert len(shops) >= 8
    got = {r.shop: (r.users, r.items, r.events) for r in shops.itertuples()}
    assert got == BUNDLED_SHOPS
    assert shops["users"].max() / shops["users"].min() > 10
    assert shops["events"].sum() == len(bundled.events)
    assert shops.loc[shops["shop"] == "germany", "countries"].item() == "Germany"
    other = shops.loc[shops["shop"] == "other", "countries"].item()
    assert "Portugal" in other and "EIRE" in other and "United Kingdom" not in other
    # the table agrees with the events
    ev = bundled.events
    recomputed = ev.groupby("shop").agg(users=("user", "nunique"), items=("item", "nunique"), events=("event_id", "size"))
    for r in shops.itertuples():
        assert tuple(recomputed.loc[r.shop]) == (r.users, r.items, r.events)


def test_bundled_schema_valid(bundled):
    ev = validate_events(bundled.events, source="online_retail events")
    cat = validate_catalog(bundled.catalog, source="online_retail catalog")
    check_events_against_catalog(ev, cat)
    pd.testing.assert_frame_equal(ev, bundled.events)
    pd.testing.assert_frame_equal(cat, bundled.catalog)


def test_bundled_event_mapping(bundled):
    ev = bundled.events
    assert set(ev["kind"]) == {"purchase"}
    assert ev["event_id"].str.fullmatch(r"\d{6}-\d+").all()
    assert (ev["weight"] >= 1).all() and (ev["weight"] == np.floor(ev["weight"])).all()
    assert ev["weight"].sum() == 5_157_293
    assert ev["timestamp"].min() == pd.Timestamp("2010-12-01 08:26:00")
    assert ev["timestamp"].max() == pd.Timestamp("2011-12-09 12:50:00")
    assert ev["user"].str.fullmatch(r"\d{5}").all()
    assert ev["item"].str.fullmatch(r"\d{5}[A-Z]*").all()
    # first line of the file: invoice 536365, line 1
    first = ev.loc[ev["event_id"] == "536365-1"].iloc[0]
    assert (first["user"], first["item"], first["weight"]) == ("17850", "85123A", 6.0)
    assert first["shop"] == uk_shard("17850", 4)
    # every user lives in exactly one shop
    assert ev.groupby("user")["shop"].nunique().max() == 1
    # events are grouped by shop
    assert ev["shop"].is_monotonic_increasing


def test_bundled_catalog(bundled):
    cat = bundled.catalog
    ev = bundled.events
    per_shop_items = ev.groupby("shop")["item"].unique()
    for shop, items in per_shop_items.items():
        assert set(cat.loc[cat["shop"] == shop, "item"]) == set(items)
    assert (cat["description"] == "").all()
    assert ((cat["price"] > 0) & (cat["price"] <= MAX_UNIT_PRICE)).all()
    heart = cat[cat["item"] == "85123A"]
    assert set(heart["title"]) == {"White Hanging Heart T-Light Holder"}
    assert set(heart["category"]) == {"holder"}
    assert set(cat["category"]) == ONLINE_RETAIL_CATEGORIES | {"other"}
    assert bundled.params["categories"] == sorted(ONLINE_RETAIL_CATEGORIES)
    # the same item has the same title and category in every shop
    assert cat.groupby("item")[["title", "category"]].nunique().max().max() == 1


def test_bundled_subsample():
    data = load_online_retail(max_users_per_shop=25, seed=3)
    users = data.events.groupby("shop")["user"].nunique()
    assert users.max() == 25
    assert users["switzerland"] == 20  # smaller shops keep everybody
    assert data.cleaning["drop_user_subsample"] == BUNDLED_CLEANING["kept"] - len(data.events)
    assert data.cleaning["kept"] == len(data.events)
    assert set(data.shops["shop"]) == set(BUNDLED_SHOPS)
    # categories do not depend on the subsample
    assert set(data.catalog["category"]) <= ONLINE_RETAIL_CATEGORIES | {"other"}
    check_events_against_catalog(data.events, data.catalog)


# ----------------------------------------------------------------------------------------
# categories


@pytest.mark.parametrize(
    "description, noun",
    [
        ("WHITE HANGING HEART T-LIGHT HOLDER", "holder"),
        ("SET OF 3 CAKE TINS PANTRY DESIGN ", "pantry"),
        ("LUNCH BAG RED RETROSPOT", "bag"),
        ("GLASS STAR FROSTED T-LIGHT HOLDERS", "holder"),
        ("PACK OF 12 PINK PAISLEY TISSUES", "tissue"),
        ("36 DOILIES VINTAGE CHRISTMAS", "doily"),
        ("ASSORTED COLOUR MINI CASES", "case"),
        ("LARGE CAKE STAND  HANGING STRAWBERY", "strawbery"),
        ("STORAGE TIN VINTAGE LEAF", "leaf"),
        ("SET OF 6 GIRLS CELEBRATION CANDLES", "candle"),
        ("JUMBO BAG RED RETROSPOT", "bag"),
        ("RED 60CM", "other"),
        ("", "other"),
    ],
)
def test_head_noun(description, noun):
    assert head_noun(description) == noun


def test_derive_category_uses_vocabulary():
    assert derive_category("WHITE HANGING HEART T-LIGHT HOLDER") == "holder"
    assert derive_category("REGENCY CAKESTAND 3 TIER") == "other"
    assert derive_category("REGENCY CAKESTAND 3 TIER", vocabulary=None) == "tier"
    assert derive_category("SMALL MARMALADE JAR", vocabulary={"box"}) == "other"


def test_category_vocabulary_counts_items():
    descs = ["RED BOX"] * 3 + ["BLUE MUG"] * 2 + ["PEN"]
    assert category_vocabulary(descs, min_items=2) == frozenset({"box", "mug"})
    assert category_vocabulary(descs, min_items=3) == frozenset({"box"})


# ----------------------------------------------------------------------------------------
# hand-built raw files

RAW_ROWS = [
    # invoice 500001: two good UK lines
    "500001,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850,United Kingdom",
    "500001,71053,WHITE  METAL LANTERN ,6,2010-12-01 08:26:00,3.39,17850,United Kingdom",
    # cancellation
    "C500002,85123A,WHITE HANGING HEART T-LIGHT HOLDER,-1,2010-12-01 09:00:00,2.55,17850,United Kingdom",
    # invoice 500003: quantity 0, two non-product codes, then a good German line (line 4)
    "500003,85123a,WHITE HANGING HEART T-LIGHT HOLDER,0,2010-12-02 10:00:00,2.55,12400,Germany",
    "500003,POST,POSTAGE,1,2010-12-02 10:00:00,18,12400,Germany",
    "500003,DCGSSGIRL,GIRLS PARTY BAG,1,2010-12-02 10:00:00,3.3,12400,Germany",
    "500003,22423a,REGENCY CAKESTAND 3 TIER,2,2010-12-02 10:00:00,12.75,12400,Germany",
    # missing customer, zero price, price outlier, empty description
    "500004,22423,REGENCY CAKESTAND 3 TIER,1,2010-12-03 10:00:00,12.75,,United Kingdom",
    "500004,22423,REGENCY CAKESTAND 3 TIER,1,2010-12-03 10:00:00,0,12346,United Kingdom",
    "500004,22502,PICNIC BASKET WICKER 60 PIECES,1,2010-12-03 10:00:00,649.5,12346,United Kingdom",
    "500004,22502,   ,1,2010-12-03 10:00:00,5.5,12346,United Kingdom",
    # a second German customer
    "500005,22423,REGENCY CAKESTAND 3 TIER,1,2010-12-04 10:00:00,10.0,12401,Germany",
    # customer 12600: 2 rows in France (seen first), 2 in Germany -> home France
    "500006,71053,WHITE METAL LANTERN,1,2010-12-05 10:00:00,3.0,12600,France",
    "500006,71053,WHITE METAL LANTERN,1,2010-12-05 10:00:00,3.0,12600,France",
    "500007,71053,WHITE METAL LANTERN,1,2010-12-06 10:00:00,3.0,12600,Germany",
    "500007,71053,WHITE METAL LANTERN,1,2010-12-06 10:00:00,3.0,12600,Germany",
    "500008,71053,WHITE METAL LANTERN,2,2010-12-07 10:00:00,4.0,12500,France",
    # one customer each in small countries -> "other"
    "500009,71053,WHITE METAL LANTERN,3,2010-12-08 10:00:00,3.0,12700,Saudi Arabia",
    "500010,85123A,CREAM HANGING HEART T-LIGHT HOLDER,4,2010-12-08 11:00:00,2.0,12800,EIRE",
    # more UK customers
    "500011,85123A,WHITE HANGING HEART T-LIGHT HOLDER,1,2010-12-09 10:00:00,2.0,17851,United Kingdom",
    "500012,85123A,WHITE HANGING HEART T-LIGHT HOLDER,1,2010-12-09 11:00:00,3.0,17852,United Kingdom",
    "500013,85123A,WHITE HANGING HEART T-LIGHT HOLDER,1,2010-12-09 12:00:00,4.0,17853,United Kingdom",
]


@pytest.fixture
def raw_csv(tmp_path):
    path = tmp_path / "raw.csv"
    path.write_text("\n".join([RAW_HEADER, *RAW_ROWS]) + "\n")
    return path


def test_rules_on_hand_built_file(raw_csv):
    data = load_online_retail(raw_csv, uk_shards=2, min_customers=2)
    assert data.cleaning == {
        "rows_read": 22,
        "drop_cancellation": 1,
        "drop_nonpositive_quantity": 1,
        "drop_non_product_code": 2,
        "drop_missing_customer": 1,
        "drop_nonpositive_price": 1,
        "drop_empty_description": 1,
        "drop_price_outlier": 1,
        "drop_user_subsample": 0,
        "kept": 14,
    }
    ev = data.events.set_index("event_id")
    assert "500003-4" in ev.index  # line numbers count the dropped lines too
    assert ev.loc["500003-4", "item"] == "22423A"  # upper-cased
    assert ev.loc["500003-4", "shop"] == "germany"
    assert ev.loc["500001-2", "weight"] == 6.0
    assert ev.loc["500001-2", "timestamp"] == pd.Timestamp("2010-12-01 08:26:00")
    shop_of = data.events.groupby("user")["shop"].first()
    assert shop_of["12600"] == "france"  # 2 French rows seen before 2 German rows
    assert shop_of["12500"] == "france"
    assert shop_of["12400"] == shop_of["12401"] == "germany"
    assert shop_of["12700"] == shop_of["12800"] == "other"
    for c in ("17850", "17851", "17852", "17853"):
        assert shop_of[c] == uk_shard(c, 2)
    # customer 12600's German rows go with the customer to the French shop
    assert (data.events["user"] == "12600").sum() == 4
    # catalog: most frequent description as title (whitespace collapsed), per-shop median price
    cat = data.catalog.set_index(["shop", "item"])
    assert cat.loc[("france", "71053"), "title"] == "White Metal Lantern"
    assert cat.loc[("france", "71053"), "price"] == 3.0  # median of 3, 3, 3, 3, 4
    assert cat.loc[("other", "85123A"), "title"] == "White Hanging Heart T-Light Holder"
    check_events_against_catalog(data.events, data.catalog)


def test_min_customers_moves_small_countries_to_other(raw_csv):
    data = load_online_retail(raw_csv, uk_shards=1, min_customers=3)
    assert set(data.shops["shop"]) == {"uk-1", "other"}
    assert data.shops.set_index("shop").loc["uk-1", "users"] == 4
    assert data.shops.set_index("shop").loc["other", "users"] == 6


def test_max_users_per_shop_is_deterministic_and_nested(raw_csv):
    def users(n, seed=0):
        d = load_online_retail(raw_csv, uk_shards=1, min_customers=3, max_users_per_shop=n, seed=seed)
        return {s: set(g) for s, g in d.events.groupby("shop")["user"]}, d

    two, d2 = users(2)
    assert {s: len(u) for s, u in two.items()} == {"uk-1": 2, "other": 2}
    assert users(2)[0] == two
    one, _ = users(1)
    assert all(one[s] <= two[s] for s in one)
    assert d2.cleaning["drop_user_subsample"] == 14 - len(d2.events)
    seeds = {frozenset(users(2, seed)[0]["uk-1"]) for seed in range(6)}
    assert len(seeds) > 1  # the seed matters


def test_bad_arguments_and_files(tmp_path, raw_csv):
    with pytest.raises(ValueError, match="uk_shards"):
        load_online_retail(raw_csv, uk_shards=0)
    with pytest.raises(ValueError, match="max_users_per_shop"):
        load_online_retail(raw_csv, max_users_per_shop=0)
    with pytest.raises(DataFileNotFoundError):
        load_online_retail(tmp_path / "missing.csv.gz")
    bad = tmp_path / "bad.csv"
    bad.write_text("InvoiceNo,StockCode,Quantity\n1,2,3\n")
    with pytest.raises(DataValidationError, match="missing column\\(s\\) 'Description', 'InvoiceDate'"):
        load_online_retail(bad)

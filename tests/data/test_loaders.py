"""Loaders and validators of the canonical events / catalog tables."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pandas as pd
import pytest

from fedgraph.data import (
    CATALOG_COLUMNS,
    EVENT_COLUMNS,
    EVENT_KINDS,
    DataFileNotFoundError,
    DataValidationError,
    check_events_against_catalog,
    load_catalog,
    load_events,
    validate_catalog,
    validate_events,
)

EV_HEADER = "event_id,shop,user,item,timestamp,kind,weight"
CAT_HEADER = "shop,item,title,description,category,price"
GOOD_EVENTS = [
    "e1,s1,u1,007,2011-03-01 12:30:00,view,1",
    "e2,s1,u1,i2,2011-03-01 12:31:00,purchase,2.5",
    "e3,s2,007,i2,2011-03-02,cart,2",
]
GOOD_CATALOG = [
    "s1,007,Mug,,kitchen,2.5",
    's1,i2,Bowl,"A bowl, blue",kitchen,0',
    "s2,i2,Lamp,A lamp,lighting,12",
]


def write(path, header, rows):
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def events_error(tmp_path, rows, name="events.csv"):
    path = write(tmp_path / name, EV_HEADER, rows)
    with pytest.raises(DataValidationError) as info:
        load_events(path)
    return info.value


def catalog_error(tmp_path, rows, name="catalog.csv"):
    path = write(tmp_path / name, CAT_HEADER, rows)
    with pytest.raises(DataValidationError) as info:
        load_catalog(path)
    return info.value


# ----------------------------------------------------------------------------------------
# good files


def test_constants():
    assert EVENT_COLUMNS == ["event_id", "shop", "user", "item", "timestamp", "kind", "weight"]
    assert CATALOG_COLUMNS == ["shop", "item", "title", "description", "category", "price"]
    assert EVENT_KINDS == ("view", "cart", "purchase")


def test_load_events_csv_canonical(tmp_path):
    df = load_events(write(tmp_path / "events.csv", EV_HEADER, GOOD_EVENTS))
    assert list(df.columns) == EVENT_COLUMNS
    assert df["item"].tolist() == ["007", "i2", "i2"]  # leading zeros kept
    assert df["user"].tolist() == ["u1", "u1", "007"]
    assert str(df["timestamp"].dtype) == "datetime64[s]"
    assert df["timestamp"].iloc[2] == pd.Timestamp("2011-03-02 00:00:00")
    assert df["weight"].dtype == np.float64
    assert df["weight"].tolist() == [1.0, 2.5, 2.0]
    for col in ("event_id", "shop", "user", "item", "kind"):
        assert df[col].dtype == "str", col
    assert isinstance(df.index, pd.RangeIndex)


def test_column_order_in_file_does_not_matter(tmp_path):
    header = "weight,kind,timestamp,item,user,shop,event_id"
    rows = [",".join(reversed(r.split(","))) for r in GOOD_EVENTS]
    a = load_events(write(tmp_path / "reversed.csv", header, rows))
    b = load_events(write(tmp_path / "events.csv", EV_HEADER, GOOD_EVENTS))
    pd.testing.assert_frame_equal(a, b)


def test_csv_gz_and_parquet_give_the_same_frame(tmp_path):
    ref = load_events(write(tmp_path / "events.csv", EV_HEADER, GOOD_EVENTS))
    gz = tmp_path / "events.csv.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as fh:
        fh.write("\n".join([EV_HEADER, *GOOD_EVENTS]) + "\n")
    pd.testing.assert_frame_equal(load_events(gz), ref)
    ref.to_parquet(tmp_path / "events.parquet")
    pd.testing.assert_frame_equal(load_events(tmp_path / "events.parquet"), ref)


def test_load_catalog_csv(tmp_path):
    cat = load_catalog(write(tmp_path / "catalog.csv", CAT_HEADER, GOOD_CATALOG))
    assert list(cat.columns) == CATALOG_COLUMNS
    assert cat["item"].tolist() == ["007", "i2", "i2"]
    assert cat["description"].tolist() == ["", "A bowl, blue", "A lamp"]
    assert cat["price"].tolist() == [2.5, 0.0, 12.0]
    assert cat["price"].dtype == np.float64


def test_loaders_write_nothing(tmp_path):
    ev = write(tmp_path / "events.csv", EV_HEADER, GOOD_EVENTS)
    cat = write(tmp_path / "catalog.csv", CAT_HEADER, GOOD_CATALOG)
    before = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    check_events_against_catalog(load_events(ev), load_catalog(cat))
    after = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    assert before == after


def test_validate_returns_copy_and_converts_types():
    df = pd.DataFrame(
        {
            "kind": ["view", "cart"],
            "event_id": [1, 2],
            "shop": ["a", "a"],
            "user": [10.0, 11.0],
            "item": ["x", "y"],
            "timestamp": pd.to_datetime(["2020-01-01 10:00:00.7", "2020-01-02"], format="ISO8601"),
            "weight": [1, 2],
        },
        index=[5, 9],
    )
    out = validate_events(df, source="frame")
    assert list(out.columns) == EVENT_COLUMNS
    assert out["event_id"].tolist() == ["1", "2"]
    assert out["user"].tolist() == ["10", "11"]
    assert out["timestamp"].iloc[0] == pd.Timestamp("2020-01-01 10:00:00")
    assert out["weight"].dtype == np.float64
    assert df["event_id"].tolist() == [1, 2]  # input untouched


# ----------------------------------------------------------------------------------------
# file-level errors


def test_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(DataFileNotFoundError) as info:
        load_events(path)
    err = info.value
    assert isinstance(err, FileNotFoundError) and isinstance(err, ValueError)
    assert str(err).startswith("nope.csv: expected an existing events file")
    assert str(path) in str(err)
    assert err.row is None


def test_unsupported_extension(tmp_path):
    path = tmp_path / "events.xlsx"
    path.write_text("whatever")
    with pytest.raises(DataValidationError) as info:
        load_events(path)
    msg = str(info.value)
    assert "events.xlsx: expected an events file ending in .csv, .csv.gz or .parquet" in msg
    assert "found extension '.xlsx'" in msg


def test_empty_file(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("")
    with pytest.raises(DataValidationError, match="found an empty file"):
        load_events(path)


def test_header_only_has_no_data_rows(tmp_path):
    err = events_error(tmp_path, [])
    assert str(err) == (
        "events.csv: expected at least one data row, found no data rows. Add events rows, or check that you passed the right file."
    )
    err = catalog_error(tmp_path, [])
    assert "found no data rows" in str(err)


def test_missing_columns_are_listed(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("event_id,shop,user,item,time,weight\ne1,s1,u1,i1,2011-03-01,1\n")
    with pytest.raises(DataValidationError) as info:
        load_events(path)
    msg = str(info.value)
    assert "missing column(s) 'timestamp', 'kind'" in msg
    assert "unknown column(s) 'time'" in msg
    assert "expected the events columns event_id, shop, user, item, timestamp, kind, weight" in msg


def test_unknown_columns_are_listed(tmp_path):
    path = tmp_path / "catalog.csv"
    path.write_text(CAT_HEADER + ",colour,size\ns1,i1,Mug,,kitchen,1,red,L\n")
    with pytest.raises(DataValidationError) as info:
        load_catalog(path)
    msg = str(info.value)
    assert "found unknown column(s) 'colour', 'size'" in msg
    assert "expected only the catalog columns shop, item, title, description, category, price" in msg


def test_extra_fields_on_a_line(tmp_path):
    err = events_error(tmp_path, [GOOD_EVENTS[0], GOOD_EVENTS[1] + ",9"])
    assert err.row == 2
    assert "as many fields as the header" in str(err)
    err = events_error(tmp_path, [GOOD_EVENTS[0] + ",9"])
    assert err.row == 1


def test_source_name_is_used(tmp_path):
    path = write(tmp_path / "x.csv", EV_HEADER, [GOOD_EVENTS[0].replace("view", "click")])
    with pytest.raises(DataValidationError, match=r"^shop-7 events, row 1, column 'kind'"):
        load_events(path, source_name="shop-7 events")


# ----------------------------------------------------------------------------------------
# row-level errors in events


def test_unparsable_timestamp_exact_message(tmp_path):
    rows = GOOD_EVENTS + ["e4,s1,u1,i2,yesterday,view,1"]
    err = events_error(tmp_path, rows)
    assert str(err) == (
        "events.csv, row 4, column 'timestamp': expected a timestamp like 2011-03-01 12:30:00, found 'yesterday'. Fix or remove that row."
    )
    assert (err.file, err.row, err.column, err.found) == ("events.csv", 4, "timestamp", "yesterday")


@pytest.mark.parametrize("value", ["2011-13-01", "01/03/2011 12:30", ""])
def test_other_bad_timestamps(tmp_path, value):
    err = events_error(tmp_path, [GOOD_EVENTS[0], f"e4,s1,u1,i2,{value},view,1"])
    assert (err.row, err.column, err.found) == (2, "timestamp", value)


def test_timestamp_with_offset_rejected(tmp_path):
    err = events_error(tmp_path, [GOOD_EVENTS[0], "e4,s1,u1,i2,2011-03-01T12:30:00+01:00,view,1"])
    assert err.row == 2 and "without a time-zone offset" in str(err)


def test_tz_aware_frame_rejected():
    df = load_events_frame()
    df["timestamp"] = df["timestamp"].dt.tz_localize("UTC")
    with pytest.raises(DataValidationError, match="expected tz-naive timestamps"):
        validate_events(df)


def test_unknown_kind_lists_allowed(tmp_path):
    err = events_error(tmp_path, GOOD_EVENTS + ["e4,s1,u1,i2,2011-03-01,click,1"])
    assert str(err) == (
        "events.csv, row 4, column 'kind': expected one of 'view', 'cart', 'purchase', found 'click'. Fix or remove that row."
    )


@pytest.mark.parametrize(
    "value, expected",
    [
        ("abc", "expected a number like 2 or 1.5, found 'abc'"),
        ("", "expected a number like 2 or 1.5, found ''"),
        ("1,5", None),  # becomes an extra field -> caught as such
        ("0", "expected a finite number > 0, found '0'"),
        ("-2", "expected a finite number > 0, found '-2'"),
        ("inf", "expected a finite number > 0, found 'inf'"),
        ("nan", "expected a finite number > 0, found 'nan'"),
    ],
)
def test_bad_weights(tmp_path, value, expected):
    err = events_error(tmp_path, [GOOD_EVENTS[0], GOOD_EVENTS[1], f"e4,s1,u1,i2,2011-03-01,view,{value}"])
    assert err.row == 3
    if expected is not None:
        assert err.column == "weight"
        assert f"events.csv, row 3, column 'weight': {expected}. Fix or remove that row." == str(err)


def test_non_finite_weight_in_frame():
    df = load_events_frame()
    df["weight"] = [1.0, np.inf, 2.0]
    with pytest.raises(DataValidationError, match=r"row 2, column 'weight': expected a finite number > 0, found inf"):
        validate_events(df)


@pytest.mark.parametrize("column, position", [("event_id", 0), ("shop", 1), ("user", 2), ("item", 3)])
def test_empty_ids(tmp_path, column, position):
    fields = GOOD_EVENTS[1].split(",")
    fields[position] = ""
    err = events_error(tmp_path, [GOOD_EVENTS[0], ",".join(fields)])
    assert (err.row, err.column) == (2, column)
    assert f"column '{column}': expected a non-empty {column}, found ''" in str(err)


def test_whitespace_id_is_empty():
    df = load_events_frame()
    df.loc[2, "user"] = "   "
    with pytest.raises(DataValidationError) as info:
        validate_events(df)
    assert (info.value.row, info.value.column) == (3, "user")


def test_missing_id_in_frame():
    df = load_events_frame()
    df["item"] = df["item"].astype(object)
    df.loc[1, "item"] = None
    with pytest.raises(DataValidationError, match="row 2, column 'item': expected a non-empty item, found an empty value"):
        validate_events(df)


def test_duplicated_event_id_names_both_rows(tmp_path):
    rows = GOOD_EVENTS + ["e2,s1,u1,i2,2011-03-05,view,1"]
    err = events_error(tmp_path, rows)
    assert str(err) == (
        "events.csv, rows 2 and 4, column 'event_id': expected a unique event_id, found 'e2' "
        "in both. Give each row its own id or remove the duplicate."
    )
    assert err.row == 4 and err.rows == (2, 4)


def test_error_is_picklable(tmp_path):
    err = events_error(tmp_path, GOOD_EVENTS + ["e4,s1,u1,i2,yesterday,view,1"])
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is DataValidationError
    assert str(back) == str(err) and back.row == 4 and back.column == "timestamp"


# ----------------------------------------------------------------------------------------
# catalog errors


def test_duplicate_shop_item_in_catalog(tmp_path):
    err = catalog_error(tmp_path, GOOD_CATALOG + ["s1,007,Mug again,,kitchen,3"])
    assert err.rows == (1, 4)
    assert "rows 1 and 4" in str(err) and "shop 's1', item '007' twice" in str(err)


def test_same_item_id_in_two_shops_is_fine(tmp_path):
    cat = load_catalog(write(tmp_path / "catalog.csv", CAT_HEADER, GOOD_CATALOG))
    assert (cat["item"] == "i2").sum() == 2


@pytest.mark.parametrize(
    "price, expected",
    [
        ("£3", "expected a number like 2 or 1.5, found '£3'"),
        ("-1", "expected a finite number >= 0, found '-1'"),
        ("inf", "expected a finite number >= 0, found 'inf'"),
    ],
)
def test_bad_prices(tmp_path, price, expected):
    err = catalog_error(tmp_path, [GOOD_CATALOG[0], f"s1,i9,Cup,,kitchen,{price}"])
    assert str(err) == f"catalog.csv, row 2, column 'price': {expected}. Fix or remove that row."


@pytest.mark.parametrize("column, row", [("title", "s1,i9,,,kitchen,1"), ("category", "s1,i9,Cup,,,1")])
def test_empty_title_or_category(tmp_path, column, row):
    err = catalog_error(tmp_path, [GOOD_CATALOG[0], row])
    assert (err.row, err.column) == (2, column)
    assert f"expected a non-empty {column}" in str(err)


# ----------------------------------------------------------------------------------------
# events against catalog


def load_events_frame():
    rows = [r.split(",") for r in GOOD_EVENTS]
    df = pd.DataFrame(rows, columns=EVENT_COLUMNS)
    return validate_events(df)


def good_catalog():
    return validate_catalog(
        pd.DataFrame(
            [
                ["s1", "007", "Mug", "", "kitchen", 2.5],
                ["s1", "i2", "Bowl", "", "kitchen", 1.0],
                ["s2", "i2", "Lamp", "", "lighting", 12.0],
            ],
            columns=CATALOG_COLUMNS,
        )
    )


def test_events_match_catalog():
    check_events_against_catalog(load_events_frame(), good_catalog())


def test_event_item_missing_from_catalog():
    ev = load_events_frame()
    ev.loc[2, "item"] = "007"  # 007 exists in s1 but not in s2: ids are shop-local
    with pytest.raises(DataValidationError) as info:
        check_events_against_catalog(ev, good_catalog(), source="events.csv")
    err = info.value
    assert (err.file, err.row, err.column, err.found) == ("events.csv", 3, "item", "007")
    assert "expected an item listed in catalog for shop 's2'" in str(err)


def test_event_shop_missing_from_catalog():
    ev = load_events_frame()
    ev.loc[0, "shop"] = "s9"
    with pytest.raises(DataValidationError, match=r"events, row 1, column 'shop': expected a shop that has items in catalog, found 's9'"):
        check_events_against_catalog(ev, good_catalog())


def test_empty_shop_is_named():
    cat = good_catalog()
    extra = pd.DataFrame([["s3", "i1", "Pen", "", "stationery", 1.0]], columns=CATALOG_COLUMNS)
    cat = validate_catalog(pd.concat([cat, extra], ignore_index=True))
    with pytest.raises(DataValidationError) as info:
        check_events_against_catalog(load_events_frame(), cat, catalog_source="catalog.csv")
    err = info.value
    assert err.file == "catalog.csv" and err.row == 4
    assert "shop 's3' with no events (empty shop)" in str(err)


def test_a_truncated_gzip_file_is_a_data_error_naming_the_file(tmp_path):
    """Issue 13.10b: a truncated .csv.gz reached an EOFError traceback."""
    whole = gzip.compress(("\n".join([EV_HEADER, *GOOD_EVENTS * 200]) + "\n").encode())
    path = tmp_path / "events.csv.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataValidationError) as info:
        load_events(path)
    assert "events.csv.gz" in str(info.value) and "complete" in str(info.value)

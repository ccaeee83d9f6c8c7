"""Issue 14.4: search queries in an events file (kind ``search``, empty item, a ``query`` column)."""

from __future__ import annotations

import pandas as pd
import pytest

from fedgraph.data import DataValidationError
from fedgraph.data.loaders import load_event_log, load_events, validate_event_log, validate_events
from fedgraph.data.schema import EVENT_COLUMNS, SEARCH_COLUMNS


def _log(rows):
    return pd.DataFrame(rows, columns=[*EVENT_COLUMNS, "query"])


GOOD = [
    ("e1", "s", "u1", "i1", "2024-01-01 10:00:00", "view", 1.0, ""),
    ("e2", "s", "u1", "", "2024-01-02 10:00:00", "search", None, "garden decoration"),
    ("e3", "s", "u2", "i2", "2024-01-03 10:00:00", "purchase", 2.0, None),
]


def test_searches_come_back_as_their_own_table_and_events_stay_as_before(tmp_path):
    events, searches = validate_event_log(_log(GOOD))
    assert list(events.columns) == EVENT_COLUMNS and list(events["event_id"]) == ["e1", "e3"]
    assert list(searches.columns) == SEARCH_COLUMNS
    assert searches.to_dict("records")[0] | {"timestamp": None} == {
        "event_id": "e2",
        "shop": "s",
        "user": "u1",
        "timestamp": None,
        "query": "garden decoration",
    }
    assert str(searches["timestamp"].dtype) == "datetime64[s]"
    # validate_events (and load_events) give the interactions alone, exactly as for an old file.
    pd.testing.assert_frame_equal(validate_events(_log(GOOD)), events)
    path = tmp_path / "events.csv"
    _log(GOOD).to_csv(path, index=False)
    pd.testing.assert_frame_equal(load_events(path), events)
    loaded_events, loaded_searches = load_event_log(path)
    pd.testing.assert_frame_equal(loaded_events, events)
    assert list(loaded_searches["query"]) == ["garden decoration"]


def test_an_old_file_without_a_query_column_has_no_searches():
    old = _log(GOOD).drop(columns="query").iloc[[0, 2]]
    events, searches = validate_event_log(old)
    assert len(events) == 2 and len(searches) == 0 and list(searches.columns) == SEARCH_COLUMNS


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda f: f.drop(columns="query"),
            "row 2, column 'kind': expected one of 'view', 'cart', 'purchase', found 'search'. A search row needs a 'query' column",
        ),
        (
            lambda f: f.assign(query=["", "", None]),
            "row 2, column 'query': expected the query text on a 'search' row, found an empty value",
        ),
        (lambda f: f.assign(item=["i1", "i9", "i2"]), "row 2, column 'item': expected an empty item on a 'search' row"),
        (
            lambda f: f.assign(query=["oops", "garden", ""]),
            "row 1, column 'query': expected an empty query (only a 'search' row has one), found 'oops'",
        ),
        (
            lambda f: f.assign(item=["", "", "i2"], kind=["view", "search", "purchase"]),
            "row 1, column 'item': expected a non-empty item (only a 'search' row has none)",
        ),
        (lambda f: f.assign(weight=[1.0, -1.0, 2.0]), "row 2, column 'weight': expected a finite number > 0"),
    ],
)
def test_a_bad_search_row_is_named_by_its_row_in_the_file(change, message):
    with pytest.raises(DataValidationError) as caught:
        validate_event_log(change(_log(GOOD)), "events.csv")
    assert str(caught.value).startswith("events.csv, " + message) or message in str(caught.value), str(caught.value)

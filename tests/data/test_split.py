"""Per-user temporal split on hand-built event tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedgraph.data import EVENT_COLUMNS, generate_federation, temporal_split, validate_events

T0 = pd.Timestamp("2024-01-01 00:00:00")


def make_events(rows):
    """rows: (event_id, shop, user, item, minutes after T0[, kind, weight])."""
    recs = []
    for r in rows:
        eid, shop, user, item, minute = r[:5]
        kind = r[5] if len(r) > 5 else "view"
        weight = r[6] if len(r) > 6 else 1.0
        recs.append([eid, shop, user, item, T0 + pd.Timedelta(minutes=minute), kind, weight])
    return validate_events(pd.DataFrame(recs, columns=EVENT_COLUMNS))


def items_of(frame, shop="s1", user="u1"):
    sel = frame[(frame["shop"] == shop) & (frame["user"] == user)]
    return set(sel["item"])


def test_last_item_goes_to_test():
    ev = make_events([(f"e{k}", "s1", "u1", f"i{k}", k) for k in range(5)])
    train, test = temporal_split(ev)
    assert items_of(test) == {"i4"}
    assert items_of(train) == {"i0", "i1", "i2", "i3"}


def test_order_uses_first_interaction_and_pairs_stay_whole():
    # i0 is seen first but again at the very end: it stays in train, with both its events.
    # i4 is first seen last (minute 8), with a later repeat: both events go to test.
    rows = [
        ("e01", "s1", "u1", "i0", 0),
        ("e02", "s1", "u1", "i1", 1),
        ("e03", "s1", "u1", "i2", 2),
        ("e04", "s1", "u1", "i3", 3),
        ("e05", "s1", "u1", "i4", 8, "cart", 2.0),
        ("e06", "s1", "u1", "i0", 9, "purchase", 3.0),
        ("e07", "s1", "u1", "i4", 10, "purchase", 1.0),
    ]
    train, test = temporal_split(make_events(rows))
    assert test["event_id"].tolist() == ["e05", "e07"]
    assert train["event_id"].tolist() == ["e01", "e02", "e03", "e04", "e06"]


def test_ties_broken_by_event_id():
    # i_b and i_a are first seen at the same minute; e09 < e10 so i_b is earlier and i_a last.
    rows = [(f"e0{k}", "s1", "u1", f"i{k}", k) for k in range(3)]  # 3 + 2 = 5 items: 1 in test
    rows += [("e10", "s1", "u1", "i_a", 5), ("e09", "s1", "u1", "i_b", 5)]
    train, test = temporal_split(make_events(rows))
    assert items_of(test) == {"i_a"}
    # reversed ids reverse the outcome
    rows[-2:] = [("e09", "s1", "u1", "i_a", 5), ("e10", "s1", "u1", "i_b", 5)]
    train, test = temporal_split(make_events(rows))
    assert items_of(test) == {"i_b"}


def test_small_users_keep_everything_in_train():
    rows = [(f"a{k}", "s1", "u1", f"i{k}", k) for k in range(4)]  # 4 items < 5
    rows += [(f"b{k}", "s1", "u2", f"i{k}", k) for k in range(5)]  # 5 items
    # many events but few distinct items: still a small user
    rows += [(f"c{k}", "s1", "u3", f"i{k % 2}", k) for k in range(20)]
    train, test = temporal_split(make_events(rows))
    assert items_of(test, user="u1") == set() and len(items_of(train, user="u1")) == 4
    assert items_of(test, user="u2") == {"i4"}
    assert items_of(test, user="u3") == set()
    assert (train["user"] == "u3").sum() == 20


def test_users_are_per_shop():
    # the same user id in two shops is two users; the same item id too
    rows = [(f"a{k}", "s1", "u1", f"i{k}", k) for k in range(5)]
    rows += [(f"b{k}", "s2", "u1", f"i{k}", 10 + k) for k in range(3)]
    train, test = temporal_split(make_events(rows))
    assert items_of(test, shop="s1") == {"i4"}
    assert items_of(test, shop="s2") == set()
    assert items_of(train, shop="s2") == {"i0", "i1", "i2"}


@pytest.mark.parametrize(
    "n_items, fraction, n_test",
    [(5, 0.2, 1), (6, 0.2, 2), (10, 0.2, 2), (11, 0.2, 3), (5, 0.5, 3), (30, 0.1, 3), (7, 0.0, 0), (5, 0.99, 4)],
)
def test_number_of_test_items(n_items, fraction, n_test):
    ev = make_events([(f"e{k:03d}", "s1", "u1", f"i{k:03d}", k) for k in range(n_items)])
    train, test = temporal_split(ev, test_fraction=fraction)
    expected = {f"i{k:03d}" for k in range(n_items - n_test, n_items)}
    assert items_of(test) == expected
    assert len(items_of(train)) == n_items - n_test


def test_min_user_items_parameter():
    ev = make_events([(f"e{k}", "s1", "u1", f"i{k}", k) for k in range(3)])
    assert len(temporal_split(ev)[1]) == 0
    _, test = temporal_split(ev, min_user_items=3)
    assert items_of(test) == {"i2"}
    # a one-item user never loses its only item
    one = make_events([("e1", "s1", "u1", "i1", 0)])
    assert len(temporal_split(one, min_user_items=1)[0]) == 1


def test_schema_order_and_determinism():
    fed = generate_federation(4, seed=5, users_per_shop=(20, 60), items_per_shop=(50, 80))
    ev = fed.events
    train, test = temporal_split(ev)
    assert len(train) + len(test) == len(ev)
    assert set(train["event_id"]).isdisjoint(set(test["event_id"]))
    for part in (train, test):
        assert list(part.columns) == EVENT_COLUMNS
        assert part.dtypes.equals(ev.dtypes)
        assert isinstance(part.index, pd.RangeIndex)
        validate_events(part)
    # relative order of the input is kept
    pos = pd.Series(np.arange(len(ev)), index=ev["event_id"])
    assert pos[train["event_id"]].is_monotonic_increasing
    assert pos[test["event_id"]].is_monotonic_increasing
    # no (shop, user, item) pair is on both sides
    key = lambda f: set(zip(f["shop"], f["user"], f["item"]))  # noqa: E731
    assert key(train).isdisjoint(key(test))
    # every test pair was first seen no earlier than every train pair of the same user
    first = pd.concat([train.assign(side="train"), test.assign(side="test")])
    first = first.groupby(["shop", "user", "item", "side"], as_index=False)["timestamp"].min()
    g = first.groupby(["shop", "user", "side"])["timestamp"]
    last_train = g.max().xs("train", level="side")
    first_test = g.min().xs("test", level="side")
    both = first_test.index.intersection(last_train.index)
    assert len(both) > 10
    assert (first_test[both] >= last_train[both]).all()
    # deterministic, and independent of the input row order
    again_train, again_test = temporal_split(ev)
    pd.testing.assert_frame_equal(again_train, train)
    shuffled = ev.sample(frac=1.0, random_state=1)
    s_train, s_test = temporal_split(shuffled)
    assert set(s_test["event_id"]) == set(test["event_id"])
    assert set(s_train["event_id"]) == set(train["event_id"])


def test_empty_and_bad_arguments():
    ev = make_events([("e1", "s1", "u1", "i1", 0)])
    train, test = temporal_split(ev.iloc[:0])
    assert len(train) == len(test) == 0 and list(train.columns) == EVENT_COLUMNS
    with pytest.raises(ValueError, match="test_fraction"):
        temporal_split(ev, test_fraction=1.0)
    with pytest.raises(ValueError, match="min_user_items"):
        temporal_split(ev, min_user_items=0)
    with pytest.raises(ValueError, match="lack column"):
        temporal_split(ev.drop(columns=["timestamp"]))

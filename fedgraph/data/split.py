"""Per-user temporal train/test split of an events table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .schema import EVENT_COLUMNS

_EPS = 1e-9


def temporal_split(events: pd.DataFrame, *, test_fraction: float = 0.2, min_user_items: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``events`` into (train, test) by holding out each user's most recent items.

    For every (shop, user), the user's distinct items are ordered by their first
    interaction: the (timestamp, event_id) of the item's earliest event, event_id breaking
    timestamp ties (compared as strings). A user with ``n >= min_user_items`` distinct items
    puts the last ``ceil(test_fraction * n)`` of them in test (at most ``n - 1``, so every
    such user keeps at least one train item); users with fewer items keep everything in
    train. A user-item pair is wholly in train or wholly in test: all events of a test pair
    go to test, including repeat interactions that happen later or earlier.

    The split is deterministic and depends only on the rows, not their order. Both outputs
    keep the input's columns and dtypes, keep the input's relative row order and have a
    fresh RangeIndex.
    """
    if not 0.0 <= float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
    if int(min_user_items) != min_user_items or min_user_items < 1:
        raise ValueError(f"min_user_items must be a positive integer, got {min_user_items!r}")
    missing = [c for c in ("event_id", "shop", "user", "item", "timestamp") if c not in events.columns]
    if missing:
        raise ValueError(f"temporal_split: events lack column(s) {', '.join(missing)}; expected {', '.join(EVENT_COLUMNS)}")
    n_rows = len(events)
    if n_rows == 0:
        return events.iloc[:0].reset_index(drop=True), events.iloc[:0].reset_index(drop=True)

    keys = events[["shop", "user", "item"]].reset_index(drop=True)
    pair = keys.groupby(["shop", "user", "item"], sort=False, dropna=False).ngroup().to_numpy()
    user = keys.groupby(["shop", "user"], sort=False, dropna=False).ngroup().to_numpy()

    # Events in (timestamp, event_id) order; the first event of each pair in that order is
    # its first interaction, and pairs come out sorted by first interaction.
    order = (
        pd.DataFrame(
            {
                "timestamp": events["timestamp"].to_numpy(),
                "event_id": events["event_id"].astype("str").to_numpy(),
            }
        )
        .sort_values(["timestamp", "event_id"], kind="stable")
        .index.to_numpy()
    )
    first_pos = pd.Series(pair[order]).drop_duplicates(keep="first").index.to_numpy()
    pairs_in_time = pair[order[first_pos]]  # pair ids ordered by first interaction
    pair_user = user[order[first_pos]]

    # Rank of each pair within its user (0 = earliest) and the user's item count.
    rank = pd.Series(pair_user).groupby(pair_user, sort=False).cumcount().to_numpy()
    n_items = np.bincount(pair_user, minlength=user.max() + 1)[pair_user]
    n_test = np.ceil(test_fraction * n_items - _EPS).astype(np.int64)
    n_test = np.minimum(n_test, n_items - 1)
    is_test_pair = (n_items >= min_user_items) & (rank >= n_items - n_test)

    test_of_pair = np.zeros(pair.max() + 1, dtype=bool)
    test_of_pair[pairs_in_time] = is_test_pair
    test_mask = test_of_pair[pair]

    train = events.iloc[np.flatnonzero(~test_mask)].reset_index(drop=True)
    test = events.iloc[np.flatnonzero(test_mask)].reset_index(drop=True)
    return train, test

"""The canonical tables every part of fedgraph reads: interaction events and shop catalogs.

Events (one row per user-item interaction), columns in this order:

=========== ================= ==========================================================
column      dtype             meaning
=========== ================= ==========================================================
event_id    str               unique over the whole table
shop        str               the shop (federated client) the event belongs to
user        str               shop-local user id
item        str               shop-local item id; (shop, item) is listed in the catalog
timestamp   datetime64[s]     tz-naive, second resolution
kind        str               one of :data:`EVENT_KINDS`
weight      float64           finite and > 0: quantity or interaction strength
=========== ================= ==========================================================

Catalog (one row per item of a shop), columns in this order:

=========== ========= ================================================================
column      dtype     meaning
=========== ========= ================================================================
shop        str       the shop
item        str       shop-local item id; (shop, item) is unique
title       str       non-empty item title
description str       free text, may be ""
category    str       non-empty interest category
price       float64   finite and >= 0
=========== ========= ================================================================

Searches (optional): an events *file* may also hold the shop's logged search queries, as rows
of kind ``search`` whose ``item`` is empty and whose text is in an extra ``query`` column
(empty on the other rows; ``weight`` may be empty on a search row). A file without a
``query`` column is read as before. The loaders return searches as their own table:

=========== ================= ==========================================================
column      dtype             meaning
=========== ================= ==========================================================
event_id    str               unique over the whole events file, searches included
shop        str               the shop
user        str               shop-local user id (the customer who searched)
timestamp   datetime64[s]     when
query       str               the query text, non-empty
=========== ================= ==========================================================

A search is the customer's own data, in the same privacy unit as their interactions.

User and item ids are shop-local: the same id in two shops means nothing. ``str`` is
pandas' string dtype (``pd.StringDtype(na_value=np.nan)``, pyarrow-backed where pyarrow is
installed), which is what ``pd.Series(["a"])`` gives under pandas 3.
"""

from __future__ import annotations

import pandas as pd

#: Columns of the events table, in order.
EVENT_COLUMNS: list[str] = ["event_id", "shop", "user", "item", "timestamp", "kind", "weight"]

#: Columns of the catalog table, in order.
CATALOG_COLUMNS: list[str] = ["shop", "item", "title", "description", "category", "price"]

#: Allowed values of ``events.kind``.
EVENT_KINDS: tuple[str, ...] = ("view", "cart", "purchase")

#: The event kind of a logged search query (kept apart from :data:`EVENT_KINDS`: it has no item).
SEARCH_KIND = "search"

#: The optional events-file column with a search's query text.
QUERY_COLUMN = "query"

#: Columns of the searches table, in order.
SEARCH_COLUMNS: list[str] = ["event_id", "shop", "user", "timestamp", "query"]

#: The string dtype of every text column.
STRING_DTYPE = "str"

#: The dtype of ``events.timestamp``.
TIMESTAMP_DTYPE = "datetime64[s]"

#: dtype of each events column.
EVENT_DTYPES: dict[str, str] = {
    "event_id": STRING_DTYPE,
    "shop": STRING_DTYPE,
    "user": STRING_DTYPE,
    "item": STRING_DTYPE,
    "timestamp": TIMESTAMP_DTYPE,
    "kind": STRING_DTYPE,
    "weight": "float64",
}

#: dtype of each searches column.
SEARCH_DTYPES: dict[str, str] = {
    "event_id": STRING_DTYPE,
    "shop": STRING_DTYPE,
    "user": STRING_DTYPE,
    "timestamp": TIMESTAMP_DTYPE,
    "query": STRING_DTYPE,
}

#: dtype of each catalog column.
CATALOG_DTYPES: dict[str, str] = {
    "shop": STRING_DTYPE,
    "item": STRING_DTYPE,
    "title": STRING_DTYPE,
    "description": STRING_DTYPE,
    "category": STRING_DTYPE,
    "price": "float64",
}


def empty_events() -> pd.DataFrame:
    """An events table with no rows and the canonical columns and dtypes."""
    return pd.DataFrame({c: pd.Series(dtype=d) for c, d in EVENT_DTYPES.items()})


def empty_searches() -> pd.DataFrame:
    """A searches table with no rows and the canonical columns and dtypes."""
    return pd.DataFrame({c: pd.Series(dtype=d) for c, d in SEARCH_DTYPES.items()})


def empty_catalog() -> pd.DataFrame:
    """A catalog table with no rows and the canonical columns and dtypes."""
    return pd.DataFrame({c: pd.Series(dtype=d) for c, d in CATALOG_DTYPES.items()})

"""The data sources ``data.source`` can name, and the one call that loads and validates one.

Each source is an entry of :data:`SOURCES` (``@source("name")`` on a loader): the bundled UCI
Online Retail data split into shops, the seeded synthetic federation, or the user's own event
and catalog files. Every loader returns a validated :class:`Dataset`; the simulation calls
:func:`load_dataset` and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from fedgraph.config import RunConfig


@dataclass
class Dataset:
    """Validated events and catalog of every shop, where they came from (for the report), and
    the shops' logged search queries (:data:`~fedgraph.data.schema.SEARCH_COLUMNS`; none for
    a source without them)."""

    events: pd.DataFrame
    catalog: pd.DataFrame
    description: dict[str, Any]
    searches: pd.DataFrame = field(default_factory=lambda: _no_searches())


def _no_searches() -> pd.DataFrame:
    from fedgraph.data.schema import empty_searches

    return empty_searches()


SOURCES: dict[str, Callable[[RunConfig], Dataset]] = {}


def source(name: str) -> Callable[[Callable[[RunConfig], Dataset]], Callable[[RunConfig], Dataset]]:
    """Register a loader under ``data.source = name``."""

    def add(loader: Callable[[RunConfig], Dataset]) -> Callable[[RunConfig], Dataset]:
        SOURCES[name] = loader
        return loader

    return add


def load_dataset(config: RunConfig) -> Dataset:
    """Load and validate the configured data source (``data.source``).

    Raises:
        DataValidationError: a data file breaks the schema (file, row, column, what to fix).
        KeyError: an unregistered source (the config check refuses it first).
    """
    return SOURCES[config.data.source](config)


@source("online_retail")
def _online_retail(config: RunConfig) -> Dataset:
    from fedgraph.data.online_retail import load_online_retail

    d = config.data
    data = load_online_retail(
        uk_shards=d.uk_shards, min_customers=d.min_customers, max_users_per_shop=d.max_users_per_shop or None, seed=d.seed
    )
    return Dataset(data.events, data.catalog, {"source": "UCI Online Retail (CC BY 4.0)", "cleaning": data.cleaning})


@source("synthetic")
def _synthetic(config: RunConfig) -> Dataset:
    from fedgraph.data.synthetic import generate_federation

    d = config.data
    fed = generate_federation(
        d.synthetic_shops,
        seed=d.seed,
        users_per_shop=tuple(d.synthetic_users_per_shop),
        items_per_shop=tuple(d.synthetic_items_per_shop),
        events_per_user=tuple(d.synthetic_events_per_user),
        searches_per_user=d.synthetic_searches_per_user,
    )
    return Dataset(fed.events, fed.catalog, {"source": f"synthetic ({d.synthetic_shops} shops, seed {d.seed})"}, fed.searches)


@source("files")
def _files(config: RunConfig) -> Dataset:
    from fedgraph.data.loaders import check_events_against_catalog, load_catalog, load_event_log

    d = config.data
    (events, searches), catalog = load_event_log(d.events), load_catalog(d.catalog)
    check_events_against_catalog(events, catalog, source=d.events, catalog_source=d.catalog)
    return Dataset(events, catalog, {"source": f"files: {d.events}, {d.catalog}"}, searches)

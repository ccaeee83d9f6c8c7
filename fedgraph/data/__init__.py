"""fedgraph's data layer: the canonical events/catalog schema, validated loaders, the UCI
Online Retail adapter, the per-user temporal split and the synthetic federation generator.

See ``docs/data.md`` for the schema, the error messages, the cleaning rules and the shop
partitioning.
"""

from .loaders import (
    DataFileNotFoundError,
    DataValidationError,
    check_events_against_catalog,
    load_catalog,
    load_events,
    validate_catalog,
    validate_events,
)
from .online_retail import (
    BUNDLED_ONLINE_RETAIL,
    OnlineRetailData,
    category_vocabulary,
    derive_category,
    head_noun,
    load_online_retail,
)
from .schema import (
    CATALOG_COLUMNS,
    CATALOG_DTYPES,
    EVENT_COLUMNS,
    EVENT_DTYPES,
    EVENT_KINDS,
    empty_catalog,
    empty_events,
)
from .split import temporal_split
from .synthetic import TAXONOMY, SyntheticFederation, generate_federation

__all__ = [
    "BUNDLED_ONLINE_RETAIL",
    "CATALOG_COLUMNS",
    "CATALOG_DTYPES",
    "DataFileNotFoundError",
    "DataValidationError",
    "EVENT_COLUMNS",
    "EVENT_DTYPES",
    "EVENT_KINDS",
    "OnlineRetailData",
    "SyntheticFederation",
    "TAXONOMY",
    "category_vocabulary",
    "check_events_against_catalog",
    "derive_category",
    "empty_catalog",
    "empty_events",
    "generate_federation",
    "head_noun",
    "load_catalog",
    "load_events",
    "load_online_retail",
    "temporal_split",
    "validate_catalog",
    "validate_events",
]

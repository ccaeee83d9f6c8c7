"""The one data pipeline of a shop: events and catalog -> item features -> split -> ShopData.

Simulation (:func:`fedgraph.simulation.prepare`, every shop of a data set) and deployment
(:mod:`fedgraph.deploy.shop_state`, one shop's daemon) both call these functions, so the same
events give the same training rows in both (tested: ``tests/test_one_pipeline.py``): the same
text model and feature recipe, the same temporal split, the same edge features and recency
(:func:`fedgraph.shop.edge_attributes`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fedgraph.config import RunConfig
from fedgraph.features import item_features

if TYPE_CHECKING:
    from fedgraph.shop import ShopData
    from fedgraph.text import EmbedStats


def text_vectors(catalog: pd.DataFrame, config: RunConfig, *, progress: bool = True) -> tuple[np.ndarray, EmbedStats]:
    """The text embedding of every catalog row, in row order, and the embedder's cache figures.

    Args:
        catalog: canonical catalog rows (:func:`fedgraph.data.loaders.validate_catalog`).
        config: ``features.cache_dir`` and ``features.text_batch_size`` are used.
        progress: show a progress bar while embedding.
    """
    from fedgraph.text import TextEmbedder, embed_catalog

    embedder = TextEmbedder(cache_dir=config.features.cache_dir or None, batch_size=config.features.text_batch_size, progress=progress)
    return embed_catalog(catalog, embedder), embedder.stats


def shop_item_features(text: np.ndarray, prices: np.ndarray, config: RunConfig) -> np.ndarray:
    """One shop's public item features from its items' text vectors and prices
    (:func:`fedgraph.features.item_features` with ``features.neighbours`` and ``features.hops``)."""
    return item_features(text, prices, neighbours=config.features.neighbours, hops=config.features.hops)


def split_events(events: pd.DataFrame, config: RunConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user's latest ``data.test_fraction`` of distinct items held out (users with at least
    ``data.min_user_items`` items): ``(history, held_out)``."""
    from fedgraph.data.split import temporal_split

    return temporal_split(events, test_fraction=config.data.test_fraction, min_user_items=config.data.min_user_items)


def shop_data(
    shop: str, history: pd.DataFrame, held_out: pd.DataFrame, catalog: pd.DataFrame, features: np.ndarray, config: RunConfig
) -> ShopData:
    """The :class:`~fedgraph.shop.ShopData` a shop trains and is evaluated on (edge recency with
    ``model.recency_halflife_days``)."""
    from fedgraph.shop import build_shop_data

    return build_shop_data(shop, history, held_out, catalog, features, recency_halflife_days=config.model.recency_halflife_days)

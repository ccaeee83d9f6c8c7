"""The one data pipeline of a shop: events and catalog -> item features -> split -> ShopData.

Simulation (:func:`fedgraph.simulation.prepare`, every shop of a data set) and deployment
(:mod:`fedgraph.deploy.shop_state`, one shop's daemon) both call these functions, so the same
events give the same training rows in both (tested: ``tests/features/test_pipeline.py``): the same
text model and feature recipe, the same temporal split, the same edge features and recency
(:func:`fedgraph.shop.edge_attributes`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fedgraph.config import RunConfig
from fedgraph.features import feature_size, item_features

if TYPE_CHECKING:
    from fedgraph.shop import ShopData


def text_vectors(catalog: pd.DataFrame, config: RunConfig, *, progress: bool = True) -> tuple[np.ndarray, Any]:
    """The text embedding of every catalog row, in row order, by the configured encoder
    (``features.text_encoder``, :mod:`fedgraph.features.encoders`), and its counters
    (``hits``, ``embedded``, ``model_loads``).

    Args:
        catalog: canonical catalog rows (:func:`fedgraph.data.loaders.validate_catalog`).
        config: the run configuration (the encoder reads its own settings from it).
        progress: show a progress bar while embedding.

    Raises:
        ValueError: the encoder returned vectors of another width than it declares.
    """
    from fedgraph.features.encoders import build_encoder
    from fedgraph.text import catalog_texts

    encoder = build_encoder(config, progress=progress)
    vectors = np.asarray(encoder.encode(catalog_texts(catalog)), dtype=np.float32)
    if vectors.shape != (len(catalog), encoder.dim):
        raise ValueError(f"text encoder {config.features.text_encoder!r} returned {vectors.shape}, not ({len(catalog)}, {encoder.dim})")
    return vectors, encoder.stats


def feature_width(config: RunConfig) -> int:
    """Width of every item feature vector under ``config``: from the encoder's width and ``features.hops``."""
    return int(index_entries(config)["feature_size"])


def index_entries(config: RunConfig) -> dict[str, Any]:
    """What a run directory's ``shops/index.json`` records about the features, whoever writes it
    (simulation, shop daemon, server): ``feature_size`` and the encoder's ``text_encoder``
    identity (:func:`fedgraph.features.encoders.encoder_identity`), which
    :meth:`fedgraph.federation.run_dir.RunDir.new_model` builds the model from."""
    from fedgraph.features.encoders import encoder_identity

    identity = encoder_identity(config)
    return {"feature_size": feature_size(identity["dim"], hops=config.features.hops), "text_encoder": identity}


def shop_item_features(text: np.ndarray, prices: np.ndarray, config: RunConfig) -> np.ndarray:
    """One shop's public item features from its items' text vectors and prices
    (:func:`fedgraph.features.item_features` with ``features.neighbours`` and ``features.hops``)."""
    return item_features(text, prices, neighbours=config.features.neighbours, hops=config.features.hops)


def split_events(events: pd.DataFrame, config: RunConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user's latest ``data.test_fraction`` of distinct items held out (users with at least
    ``data.min_user_items`` items): ``(history, held_out)``."""
    from fedgraph.data.split import temporal_split

    return temporal_split(events, test_fraction=config.data.test_fraction, min_user_items=config.data.min_user_items)


def before_held_out(searches: pd.DataFrame, *held_out: pd.DataFrame) -> np.ndarray:
    """Which ``searches`` a view may use: ``bool [len(searches)]``, true for a search made strictly
    before its user's first event in any of the ``held_out`` tables (every search of a user with
    none there). So no query typed during the period being predicted is used to predict it."""
    if len(searches) == 0:
        return np.zeros(0, dtype=bool)
    frames = [h[["shop", "user", "timestamp"]] for h in held_out if len(h)]
    if not frames:
        return np.ones(len(searches), dtype=bool)
    first = pd.concat(frames).groupby(["shop", "user"])["timestamp"].min()
    cut = first.reindex(pd.MultiIndex.from_frame(searches[["shop", "user"]])).to_numpy()
    return np.asarray(pd.isna(cut) | (searches["timestamp"].to_numpy() < cut), dtype=bool)


def latest_queries(searches: pd.DataFrame, allowed: np.ndarray, most: int) -> np.ndarray:
    """Positions (in ``searches``) of each customer's latest ``most`` searches among the
    ``allowed`` ones (:func:`before_held_out`), the only ones a view keeps; so only those are
    embedded, however long the shop's search log."""
    rows = np.flatnonzero(allowed)
    if len(rows) == 0 or most <= 0:
        return np.zeros(0, dtype=np.int64)
    part = searches.iloc[rows].assign(_row=rows).sort_values(["shop", "user", "timestamp", "_row"], kind="stable")
    return np.sort(part.groupby(["shop", "user"], sort=False).tail(int(most))["_row"].to_numpy(dtype=np.int64))


def query_vectors(searches: pd.DataFrame, config: RunConfig, *, progress: bool = True) -> np.ndarray:
    """The searches' query texts embedded by the item text encoder (the same space as the items'
    text block), ``float32 [len(searches), text_dim]``; never read from or written to the text
    cache (queries are customer data)."""
    from fedgraph.features.encoders import build_encoder, text_dim

    if len(searches) == 0 or config.model.search_queries <= 0:
        return np.zeros((len(searches), text_dim(config)), dtype=np.float32)
    encoder = build_encoder(config, progress=progress)
    return np.asarray(encoder.encode(searches["query"].astype(str).tolist(), cache=False), dtype=np.float32)


def shop_data(
    shop: str,
    history: pd.DataFrame,
    held_out: pd.DataFrame,
    catalog: pd.DataFrame,
    features: np.ndarray,
    config: RunConfig,
    *,
    searches: pd.DataFrame | None = None,
    search_vectors: np.ndarray | None = None,
) -> ShopData:
    """The :class:`~fedgraph.shop.ShopData` a shop trains and is evaluated on (edge recency with
    ``model.recency_halflife_days``; the text block's width, ``meta["text_dim"]``, from the encoder;
    each user's latest ``model.search_queries`` of ``searches``, embedded as ``search_vectors``
    (:func:`query_vectors`), already cut to what this view may use (:func:`before_held_out`))."""
    from fedgraph.features.encoders import text_dim
    from fedgraph.shop import build_shop_data

    data = build_shop_data(
        shop,
        history,
        held_out,
        catalog,
        features,
        recency_halflife_days=config.model.recency_halflife_days,
        searches=searches,
        search_vectors=search_vectors,
        max_queries=config.model.search_queries,
    )
    data.meta["text_dim"] = text_dim(config)
    return data

"""Simulation and deployment turn the same events into the same training rows (issue 17.1)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedgraph.config import RunConfig
from fedgraph.federation.run_dir import RunDir
from fedgraph.shop import ShopData

SHOP = "berlin"


def _catalog() -> pd.DataFrame:
    names = ["mug", "bowl", "plate", "lamp", "rug", "vase", "candle", "towel", "chair", "table", "shelf", "clock"]
    return pd.DataFrame(
        {
            "shop": SHOP,
            "item": [f"i{n:02d}" for n in range(len(names))],
            "title": [f"{n} no. {k}" for k, n in enumerate(names)],
            "description": "",
            "category": ["kitchen"] * 3 + ["home"] * (len(names) - 3),
            "price": np.linspace(1.5, 40, len(names)),
        }
    )


def _events(catalog: pd.DataFrame) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    rows = []
    for u in range(14):
        start = pd.Timestamp("2024-01-01") + pd.Timedelta(hours=int(rng.integers(0, 500)))
        for j in range(int(rng.integers(6, 11))):
            rows.append(
                {
                    "event_id": f"e{u:02d}-{j:02d}",
                    "shop": SHOP,
                    "user": f"u{u:02d}",
                    "item": catalog["item"].iloc[int(rng.integers(0, len(catalog)))],
                    "timestamp": start + pd.Timedelta(hours=7 * j + int(rng.integers(0, 5))),
                    "kind": ["view", "cart", "purchase"][j % 3],
                    "weight": float(1 + j % 2),
                }
            )
    return pd.DataFrame(rows)


def test_the_same_events_give_the_same_shop_data_in_simulation_and_deployment(tmp_path, text_cache):
    from fedgraph.deploy.ingest import EventLog, check_events
    from fedgraph.deploy.paths import ShopPaths
    from fedgraph.deploy.shop_state import load_catalog_features, refresh_training_data
    from fedgraph.simulation import Dataset, prepare

    config = RunConfig.load(None, [f"features.cache_dir='{text_cache}'", "federation.min_train_shops=1"])
    catalog = _catalog()
    events = _events(catalog)

    # simulation: the test view of the shop (whole training period as history, test held out)
    sim = tmp_path / "sim"
    sim.mkdir()
    config.save(sim / "config.toml")
    prepare(config, RunDir.at(sim), lambda line: None, dataset=Dataset(events, catalog, {"source": "test"}))
    simulated = ShopData.load(RunDir.at(sim).final_shop_file(SHOP))

    # deployment: the shop's daemon ingests the same events from a drop file and builds its data
    paths = ShopPaths(tmp_path / "shop-state")
    paths.run.mkdir(parents=True)
    config.save(paths.run / "config.toml")
    catalog.to_csv(tmp_path / "catalog.csv", index=False)
    features = load_catalog_features(tmp_path / "catalog.csv", SHOP, config, paths.items)
    log = EventLog(paths.events)
    try:
        raw = events.drop(columns="shop").astype(str)
        log.ingest(check_events(raw, shop=SHOP, items=set(catalog["item"]), source="drop.csv"), source="drop", name="drop.csv")
        refresh_training_data(paths, features, config, log)
    finally:
        log.close()
    deployed = ShopData.load(RunDir.at(paths.run).shop_file(SHOP))

    for name in ("users", "items", "indptr", "item", "test_indptr", "test_item"):
        assert np.array_equal(getattr(simulated, name), getattr(deployed, name)), name
    np.testing.assert_allclose(simulated.item_features, deployed.item_features, rtol=0, atol=1e-6)
    np.testing.assert_allclose(simulated.attr, deployed.attr, rtol=0, atol=1e-6)  # edge features: recency, weight, kind

"""A shop's working state between and during rounds: data for training, the global model, the graph.

Layout of ``STATE_DIR`` (``[shop] state_dir`` of ``shop.toml``)::

    events.sqlite          the event log (fedgraph.deploy.ingest): every ingested event, exactly once
    graph.sqlite           the shop's interest graph (fedgraph.graph.GraphStore)
    items.npz              catalog item ids and their public feature vectors (MiniLM text + price)
    run/                   a fedgraph run directory for this shop (config.toml, shops/<shop>.npz,
                           local/<shop>.pt: the shop-private model part), what the ClientApp trains on
    model/global.pt        the newest global model received from the server (round, version)
    status.json            the daemon's live status (fedgraph client status)
    logs/daemon.jsonl      structured logs
    flwr-home/             the SuperNode's Flower home

Graph maintenance: when a new global model arrives every user is re-embedded and the whole graph
rewritten (:meth:`GraphUpdater.rebuild`); between models, new events only re-embed the users they
touch (:meth:`GraphUpdater.update`), with the current model and no training. A user's history is
merged per item (summed weight, latest time, strongest kind) and its edge features are
:func:`fedgraph.shop.edge_attributes`, the same as in training: recency
``exp(-ln 2 * age / model.recency_halflife_days)`` with the age measured from the *user's own*
latest event, so one customer's graph never depends on other customers' activity. Each user's node row records
the model version, round and event offset its edges reflect (all of a user's edges are replaced
together, in one transaction).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fedgraph.atomic import atomic_path, atomic_write_bytes, atomic_write_json
from fedgraph.config import RunConfig
from fedgraph.deploy.ingest import EventLog
from fedgraph.deploy.paths import ShopPaths
from fedgraph.features import pipeline
from fedgraph.federation.run_dir import RunDir, state_digest
from fedgraph.models.interest_model import EDGE_FEATURES
from fedgraph.shop import KIND_ORDER, edge_attributes

GRAPH_OFFSET_KEY = "graph_offset"
DATA_OFFSET_KEY = "training_data_offset"
_DATA_LOCK = threading.Lock()


def model_signature(config: RunConfig) -> str:
    """What shops and server must agree on for weights to fit: the model and feature settings and
    the text encoder (its name, weights' fingerprint and width,
    :func:`fedgraph.features.encoders.encoder_identity`)."""
    sig = {"model": config.to_dict()["model"], "hops": config.features.hops, **pipeline.index_entries(config)}
    return json.dumps(sig, sort_keys=True)


def model_signature_digest(config: RunConfig) -> str:
    """A short hash of :func:`model_signature`: the server sends it with every run."""
    return hashlib.sha256(model_signature(config).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- catalog features


@dataclass
class Catalog:
    shop: str
    frame: pd.DataFrame  # canonical catalog rows of this shop, in feature order
    features: np.ndarray  # [I, F]

    def __post_init__(self) -> None:
        self.items: list[str] = self.frame["item"].astype(str).tolist()

    @property
    def num_items(self) -> int:
        return len(self.items)


def load_catalog_features(path: Path, shop: str, config: RunConfig, cache: Path, *, log: Any = None) -> Catalog:
    """The shop's catalog and item feature vectors, cached in ``cache`` (keyed by file and settings)."""
    from fedgraph.data.loaders import read_table, validate_catalog

    raw = read_table(path, path.name, "catalog")
    if "shop" not in raw.columns:
        raw.insert(0, "shop", shop)
    catalog = validate_catalog(raw, source=path.name)
    catalog = catalog[catalog["shop"] == shop].reset_index(drop=True)
    if catalog.empty:
        raise ValueError(f"catalog {path} has no items of shop {shop!r}; check source.catalog and shop.name")
    key = hashlib.sha256(path.read_bytes() + model_signature(config).encode() + str(config.features.neighbours).encode()).hexdigest()
    if cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            if str(z["key"]) == key:
                return Catalog(shop, catalog, z["features"])

    started = time.perf_counter()
    text, _ = pipeline.text_vectors(catalog, config, progress=False)
    feats = pipeline.shop_item_features(text, catalog["price"].to_numpy(), config)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, key=np.array(key), features=feats)

    with atomic_path(cache) as tmp:
        write(tmp)
    if log is not None:
        log.info(
            "catalog_features",
            f"item features for {len(catalog)} catalog items in {time.perf_counter() - started:.1f} s",
            items=len(catalog),
            seconds=round(time.perf_counter() - started, 2),
        )
    return Catalog(shop, catalog, feats)


# ----------------------------------------------------------------------------- training data


def write_run_dir(paths: ShopPaths, config: RunConfig, shops: list[str]) -> RunDir:
    """The shop's run directory: the federation's config and shop list (only this shop's data)."""
    run = RunDir.at(paths.run)
    text = config.to_toml()
    if not run.config_file.exists() or run.config_file.read_text() != text:
        config.save(run.config_file)
    index_file = run.shops_dir / "index.json"
    index = {"shops": list(shops), **pipeline.index_entries(config), "dataset": {"source": "shop daemon event log"}}
    if not index_file.exists() or json.loads(index_file.read_text()) != index:
        atomic_write_json(index_file, index)
    return RunDir.at(paths.run)


def refresh_training_data(paths: ShopPaths, catalog: Catalog, config: RunConfig, events: EventLog) -> tuple[int, bool]:
    """Rebuild ``run/shops/<shop>.npz`` from the event log if events arrived since the last build.

    Returns (event offset the data reflects, whether it was rebuilt).
    """
    from fedgraph.federation import shop_side

    with _DATA_LOCK:
        run = RunDir.at(paths.run)
        head = events.head
        target = run.shop_file(catalog.shop)
        built = events.offset(DATA_OFFSET_KEY, -1)
        if built == head and target.exists():
            return head, False
        frame = events.all_events(catalog.shop, upto=head)
        if frame.empty:
            raise RuntimeError(
                f"shop {catalog.shop!r} has ingested no events yet, so it cannot train; drop event files into its source first"
            )
        train, test = pipeline.split_events(frame, config)
        # The customers' searches before their held-out items, embedded here (never cached): the same rule as a simulation's.
        searches = events.all_searches(catalog.shop, upto=head)
        rows = pipeline.latest_queries(searches, pipeline.before_held_out(searches, test), config.model.search_queries)
        searches = searches.iloc[rows].reset_index(drop=True)  # only what the data keeps is embedded
        vectors = pipeline.query_vectors(searches, config, progress=False)
        data = pipeline.shop_data(
            catalog.shop, train, test, catalog.frame, catalog.features, config, searches=searches, search_vectors=vectors
        )
        data.meta["event_offset"] = head
        data.save(target)
        shop_side.forget_cached(target)  # the warm ClientApp caches shop data per process
        events.set_offset(DATA_OFFSET_KEY, head)
        return head, True


# ----------------------------------------------------------------------------- global model


def save_global_model(paths: ShopPaths, state: dict[str, torch.Tensor], server_round: int, run_id: int = 0) -> tuple[str, bool]:
    """Keep the newest global model the server sent; returns (version, whether it is new).

    Within one Flower run the newest is the highest round; a model of another run (the server
    started a new one) replaces the stored one whatever its round: a server only sends messages
    of its current run.
    """
    version = state_digest(state)[:16]
    current = load_global_model(paths, header_only=True)
    same_run = current is not None and int(current.get("run_id", 0)) == int(run_id)
    if current is not None and (current["model_version"] == version or (same_run and current["round"] > server_round)):
        return version, False
    payload = {
        "round": int(server_round),
        "run_id": int(run_id),
        "model_version": version,
        "received_at": time.time(),
        "state_dict": {k: v.detach().cpu() for k, v in state.items()},
    }
    with atomic_path(paths.model) as tmp:
        torch.save(payload, tmp)
    atomic_write_json(paths.model.with_suffix(".json"), {k: v for k, v in payload.items() if k != "state_dict"})
    return version, True


def load_global_model(paths: ShopPaths, *, header_only: bool = False) -> dict[str, Any] | None:
    header = paths.model.with_suffix(".json")
    if header_only:
        return json.loads(header.read_text()) if header.exists() else None
    if not paths.model.exists():
        return None
    return torch.load(paths.model, map_location="cpu", weights_only=True)


def record_message(paths: ShopPaths, kind: str, server_round: int, version: str, **extra: Any) -> None:
    atomic_write_json(paths.last_message, {"type": kind, "round": int(server_round), "model_version": version, "at": time.time(), **extra})


# ----------------------------------------------------------------------------- graph maintenance


class GraphUpdater:
    """Keeps ``graph.sqlite`` current: full rebuild per model version, per-user upserts per event."""

    def __init__(self, paths: ShopPaths, catalog: Catalog, config: RunConfig, events: EventLog):
        from fedgraph.graph.stores import open_store

        self.paths = paths
        self.catalog = catalog
        self.config = config
        self.events = events
        self.store = open_store(config, paths.root, create=True)
        self.item_index = pd.Index(catalog.items)
        self.model_version: str | None = None
        self.round = 0
        self._model = None
        self._items: torch.Tensor | None = None
        self._query_data: Any = None  # the prepared data's queries, reloaded when the file changes
        self._query_stamp: int | None = None

    def close(self) -> None:
        self.store.close()

    # -------------------------------------------------------------- model
    def load_model(self) -> bool:
        """Load the newest global model (or the seeded initial one); True if it changed."""
        header = load_global_model(self.paths, header_only=True)
        if header is not None and header["model_version"] == self.model_version:
            return False
        run = RunDir.at(self.paths.run)
        torch.manual_seed(self.config.train.seed)
        if header is None:
            if self.model_version is not None:
                return False
            model = run.new_model(len(self.catalog.items))
            state = model.shared_state_dict()
            version, rnd = "init-" + state_digest(state)[:11], 0
        else:
            payload = load_global_model(self.paths)
            state, version, rnd = payload["state_dict"], payload["model_version"], int(payload["round"])
        from fedgraph.federation.shop_side import model_for_shop

        model = model_for_shop(run, self.catalog, state)
        model.eval()
        with torch.no_grad():
            feats = torch.from_numpy(self.catalog.features)
            self._items = model.item_embeddings(feats, torch.arange(len(feats)))
        self._model, self.model_version, self.round = model, version, rnd
        return True

    # -------------------------------------------------------------- users
    def _embed(self, users: list[str], hist: pd.DataFrame) -> tuple[np.ndarray, list[np.ndarray]]:
        """User vectors (scaled by 1/temperature) and each user's seen item indices. Edge features
        are :func:`fedgraph.shop.edge_attributes`, as in training (recency from the user's own
        latest event)."""
        h = self.config.evaluation.history
        kind_rank = {k: i for i, k in enumerate(KIND_ORDER)}
        hist = hist.assign(i=self.item_index.get_indexer(hist["item"]), k=hist["kind"].map(kind_rank).fillna(0).astype(int))
        g = (
            hist[hist["i"] >= 0]
            .groupby(["user", "i"], sort=False)
            .agg(weight=("weight", "sum"), last=("ts", "max"), k=("k", "max"))
            .reset_index()
        )
        g = g.sort_values(["user", "last", "i"], kind="stable")
        pos = {u: n for n, u in enumerate(users)}
        B = len(users)
        idx = np.zeros((B, h), dtype=np.int64)
        attr = np.zeros((B, h, EDGE_FEATURES), dtype=np.float32)
        mask = np.zeros((B, h), dtype=bool)
        seen: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * B
        for user, rows in g.groupby("user", sort=False):
            r = pos[user]
            items = rows["i"].to_numpy()
            seen[r] = items
            rows = rows.iloc[-h:]  # the user's latest event is among them (sorted by time)
            n = len(rows)
            idx[r, :n] = rows["i"].to_numpy()
            attr[r, :n] = edge_attributes(
                np.zeros(n),
                rows["last"].to_numpy(),
                rows["weight"].to_numpy(),
                rows["k"].to_numpy(),
                recency_halflife_days=self.config.model.recency_halflife_days,
            )
            mask[r, :n] = True
        queries, query_mask = self._queries(users)
        with torch.no_grad():
            z = self._model.user_embeddings_from(
                self._items[torch.from_numpy(idx)], torch.from_numpy(attr), torch.from_numpy(mask), queries, query_mask
            )
        return (z / self._model.temperature).numpy(), seen

    def _queries(self, users: list[str]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The users' embedded search queries as the shop's prepared training data holds them
        (``run/shops/<shop>.npz``, rebuilt when events or searches arrive): ``[B, Q, T]`` and
        its mask, or ``(None, None)`` when the shop has none. A search counts in the graph from
        the next rebuild of that data on."""
        from fedgraph.training.rows import padded_queries

        path = RunDir.at(self.paths.run).shop_file(self.catalog.shop)
        if not path.exists():
            return None, None
        stamp = path.stat().st_mtime_ns
        if self._query_stamp != stamp:
            from fedgraph.shop import ShopData

            self._query_data, self._query_stamp = ShopData.load(path), stamp
        data = self._query_data
        return padded_queries(data, pd.Index(data.users).get_indexer(users))

    def _graph(self, users: list[str], offset: int, *, neighbours: bool):
        from fedgraph.graph import build_interest_graph

        hist = self.events.histories(users)
        user_vecs, seen = self._embed(users, hist)
        cfg = self.config.graph
        graph = build_interest_graph(
            self.catalog.shop,
            users,
            user_vecs,
            self.catalog.items,
            self._items[:, :-1].numpy(),
            self.catalog.frame["title"].astype(str).tolist(),
            self.catalog.frame["category"].astype(str).tolist(),
            exclude=seen,
            item_bias=self._items[:, -1].numpy(),
            top_k_items=cfg.top_k_items,
            top_k_interests=cfg.top_k_interests,
            top_k_neighbours=cfg.top_k_neighbours if neighbours else 0,
            model_version=self.model_version or "",
            round=self.round,
        )
        graph.event_offset = str(offset)
        return graph

    def rebuild(self) -> dict[str, Any]:
        """Re-embed every user with the current model and replace the shop's graph."""
        users, head = self.events.users_since(0)
        graph = self._graph(sorted(users), head, neighbours=True)
        self.store.write(graph)
        self.events.set_offset(GRAPH_OFFSET_KEY, head)
        return {"users": len(users), "event_offset": head}

    def update(self) -> dict[str, Any]:
        """Re-embed the users with events after the graph's offset; upsert their edges."""
        if self.catalog.shop not in self.store.shops():
            return self.rebuild()
        since = self.events.offset(GRAPH_OFFSET_KEY)
        users, head = self.events.users_since(since)
        if not users:
            return {"users": 0, "event_offset": head}
        graph = self._graph(sorted(users), head, neighbours=False)
        interests = graph.interests
        ui = graph.user_interest
        ur = graph.user_item
        for n, user in enumerate(graph.users):
            sel_i = ui[ui["user_idx"] == n]
            sel_r = ur[ur["user_idx"] == n]
            self.store.upsert_user(
                self.catalog.shop,
                user,
                [(interests[j], float(w)) for j, w in zip(sel_i["interest_idx"], sel_i["weight"])],
                [(self.catalog.items[j], float(s)) for j, s in zip(sel_r["item_idx"], sel_r["score"])],
                model_version=graph.model_version,
                round=graph.round,
                event_offset=str(head),
            )
        self.events.set_offset(GRAPH_OFFSET_KEY, head)
        return {"users": len(users), "event_offset": head}

    def step(self) -> dict[str, Any] | None:
        """One maintenance pass: rebuild on a new model, else update touched users."""
        if self.events.head == 0:
            return None
        if self.load_model():
            return {"kind": "rebuild", "model_version": self.model_version, **self.rebuild()}
        if self.events.head > self.events.offset(GRAPH_OFFSET_KEY):
            return {"kind": "update", "model_version": self.model_version, **self.update()}
        return None


def atomic_status(paths: ShopPaths, status: dict[str, Any]) -> None:
    atomic_write_bytes(paths.status, (json.dumps(status, indent=2, default=str) + "\n").encode())

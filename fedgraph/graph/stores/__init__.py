"""Where interest graphs are stored: a registry of backends, one file each.

A backend is a file in this package that calls :func:`register` with a :class:`StoreSpec`: how to
open it at a location, and which location a run directory (or a shop daemon's state directory)
gives it. ``graph.store`` in the run configuration names the backend; the simulation, the shop
daemon and ``fedgraph graph`` open their store with :func:`open_store`, so a Neo4j or Kuzu
backend is one file implementing :class:`InterestGraphStore` plus a config value.

This package imports no backend's dependencies until a store is opened.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fedgraph.registry import Registry, import_entries

if TYPE_CHECKING:
    from fedgraph.config import RunConfig
    from fedgraph.graph.builder import InterestGraph


class InterestGraphStore(Protocol):
    """What fedgraph asks of a graph store (:class:`fedgraph.graph.store.GraphStore` is the
    SQLite one): write a shop's whole graph or one user's edges, erase a user (every byte of them, the
    right to erasure), and answer the queries of
    ``fedgraph graph``. Unknown shops, users or items raise :class:`~fedgraph.graph.GraphLookupError`."""

    def write(self, graph: InterestGraph) -> Any: ...
    def upsert_user(self, *args: Any, **kwargs: Any) -> Any: ...
    def forget_user(self, shop: str, user: str) -> int: ...
    def shops(self) -> list[str]: ...
    def summary(self, shop: str) -> Any: ...
    def versions(self, shop: str) -> list[Any]: ...
    def user_interests(self, shop: str, user: str, k: int = 5) -> list[Any]: ...
    def user_recommendations(self, shop: str, user: str, k: int = 10) -> list[Any]: ...
    def item_neighbours(self, shop: str, item: str, k: int = 10) -> list[Any]: ...
    def interest_audience(self, shop: str, interest: str, k: int = 100) -> list[tuple[str, float]]: ...
    def interests(self, shop: str) -> list[str]: ...
    def iter_nodes(self, shop: str, kind: str) -> Iterator[tuple]: ...
    def iter_edges(self, shop: str, kind: str) -> Iterator[tuple]: ...
    def read_graph(self, shop: str) -> InterestGraph: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class StoreSpec:
    """One backend.

    Attributes:
        name: its ``graph.store`` word.
        open: ``open(location, create) -> store``; with ``create=False`` a missing store is an error.
        location: ``location(root) -> Path`` of the store under a run directory or a shop's state directory.
        description: one line for docs and errors.
    """

    name: str
    open: Callable[[Path, bool], Any]
    location: Callable[[Path], Path]
    description: str = ""


STORES: Registry[StoreSpec] = Registry("graph store")


#: Add an entry (a second, different one of the same name is an error).
register = STORES.register


def open_store(config: RunConfig, root: str | Path, *, create: bool = False) -> InterestGraphStore:
    """The configured store (``graph.store``) of the run or shop directory ``root``."""
    spec = STORES[config.graph.store]
    return spec.open(spec.location(Path(root)), create)


import_entries(__name__, __path__)

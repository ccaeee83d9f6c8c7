"""``sqlite``: the embedded SQLite store, ``graph.sqlite`` in the run (or shop state) directory
(:class:`fedgraph.graph.store.GraphStore`: versioned per shop, one transaction per write)."""

from __future__ import annotations

from pathlib import Path

from fedgraph.graph.stores import StoreSpec, register


def _open(location: Path, create: bool):
    from fedgraph.graph.store import GraphStore

    return GraphStore(location, create=create)


register(StoreSpec("sqlite", open=_open, location=lambda root: root / "graph.sqlite", description="embedded SQLite file graph.sqlite"))

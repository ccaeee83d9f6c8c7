"""Per-shop user-interest graphs: build from embeddings, store in SQLite, query, export.

Typical use after federated training::

    graph = build_interest_graph(shop, user_ids, user_emb, item_ids, item_emb, titles, cats,
                                 exclude=seen, model_version=version, round=rnd)
    graph.event_offset = offset
    with GraphStore("runs/graphs.sqlite") as store:
        store.write(graph)
        store.user_recommendations(shop, "12345", k=10)
"""

from fedgraph.graph.builder import (
    ITEM_ITEM_DTYPE,
    USER_INTEREST_DTYPE,
    USER_ITEM_DTYPE,
    InterestGraph,
    build_interest_graph,
    to_hetero_data,
)
from fedgraph.graph.export import NEO4J_FILES, export_graphml, export_neo4j
from fedgraph.graph.store import (
    GraphLookupError,
    GraphStore,
    GraphStoreError,
    GraphSummary,
    Interest,
    Neighbour,
    Recommendation,
)

__all__ = [
    "GraphLookupError",
    "GraphStore",
    "GraphStoreError",
    "GraphSummary",
    "ITEM_ITEM_DTYPE",
    "Interest",
    "InterestGraph",
    "NEO4J_FILES",
    "Neighbour",
    "Recommendation",
    "USER_INTEREST_DTYPE",
    "USER_ITEM_DTYPE",
    "build_interest_graph",
    "export_graphml",
    "export_neo4j",
    "to_hetero_data",
]

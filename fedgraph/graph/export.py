"""Export a shop's interest graph from a :class:`~fedgraph.graph.store.GraphStore`.

* :func:`export_graphml` -- one GraphML file (Gephi, yEd, Cytoscape, ``networkx.read_graphml``).
* :func:`export_neo4j` -- CSV files for ``neo4j-admin database import``, an ``import.cypher``
  doing the same with ``LOAD CSV``, and a ``README.txt`` with the commands.

Both stream rows out of the store (memory stays flat on large graphs), read one consistent
snapshot of the store, and write every file atomically (:mod:`fedgraph.atomic`): an
interrupted export leaves no half-written file behind.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from fedgraph.atomic import atomic_path, atomic_write_text
from fedgraph.graph.store import GraphStore

__all__ = ["NEO4J_FILES", "export_graphml", "export_neo4j"]

# Characters XML 1.0 forbids even escaped (control characters, lone surrogates, U+FFFE/F).
_XML_INVALID = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

# GraphML keys: (id, for, attr.name, attr.type)
_GRAPHML_KEYS = [
    ("g_shop", "graph", "shop", "string"),
    ("g_model_version", "graph", "model_version", "string"),
    ("g_round", "graph", "round", "int"),
    ("g_event_offset", "graph", "event_offset", "string"),
    ("n_type", "node", "type", "string"),
    ("n_id", "node", "id", "string"),
    ("n_title", "node", "title", "string"),
    ("n_category", "node", "category", "string"),
    ("e_type", "edge", "type", "string"),
    ("e_weight", "edge", "weight", "double"),
    ("e_rank", "edge", "rank", "int"),
    ("e_model_version", "edge", "model_version", "string"),
    ("e_round", "edge", "round", "int"),
]


def _weight(value: float) -> str:
    """Shortest text that reads back as the same float32 (weights are float32 throughout)."""
    return str(np.float32(value))


def _xml_text(value: object) -> str:
    return escape(_XML_INVALID.sub("", str(value)))


def _xml_attr(value: object) -> str:
    return quoteattr(_XML_INVALID.sub("", str(value)))


def _data(key: str, value: object) -> str:
    return f'<data key="{key}">{_xml_text(value)}</data>'


def export_graphml(store: GraphStore, shop: str, path: str | Path) -> Path:
    """Write ``shop``'s graph to ``path`` as directed GraphML, atomically; return the path.

    Node ids are ``user:<id>``, ``item:<id>`` and ``interest:<name>`` (so the three id spaces
    cannot collide); every node has ``type`` (user/item/interest) and ``id`` (the shop-local
    id), items also ``title`` and ``category``. Every edge has ``type`` (interested_in /
    recommended / similar_to), ``weight`` (interest probability / score / cosine similarity),
    ``model_version`` and ``round``; recommendations also ``rank``. Graph-level data: shop,
    model version, round and event offset. Characters XML cannot carry are dropped.
    """
    path = Path(path)
    with store.snapshot(), atomic_path(path) as tmp:
        info = store.summary(shop)
        with open(tmp, "w", encoding="utf-8", newline="\n") as out:
            _write_graphml(store, shop, info, out)
    return path


def _write_graphml(store: GraphStore, shop: str, info, out: IO[str]) -> None:
    w = out.write
    w("<?xml version='1.0' encoding='utf-8'?>\n")
    w(
        '<graphml xmlns="http://graphml.graphdrawing.org/xmlns" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:schemaLocation="http://graphml.graphdrawing.org/xmlns '
        'http://graphml.graphdrawing.org/xmlns/1.0/graphml.xsd">\n'
    )
    for key_id, domain, name, kind in _GRAPHML_KEYS:
        w(f'<key id="{key_id}" for="{domain}" attr.name="{name}" attr.type="{kind}"/>\n')
    w(f'<graph id={_xml_attr(shop)} edgedefault="directed">\n')
    w(_data("g_shop", shop) + _data("g_model_version", info.model_version) + _data("g_round", info.round) + "\n")
    if info.event_offset is not None:
        w(_data("g_event_offset", info.event_offset) + "\n")

    # Escaping dominates the cost on big graphs: quote each id once (items and interests are
    # few; edges arrive grouped by source, so the last source is cached) and build the
    # (model_version, round) tail once per distinct pair.
    for user, *_ in store.iter_nodes(shop, "user"):
        w(f"<node id={_xml_attr('user:' + user)}>{_data('n_type', 'user')}{_data('n_id', user)}</node>\n")
    item_ids: dict[str, str] = {}
    for item, title, category, *_ in store.iter_nodes(shop, "item"):
        item_ids[item] = _xml_attr("item:" + item)
        w(
            f"<node id={item_ids[item]}>{_data('n_type', 'item')}{_data('n_id', item)}"
            f"{_data('n_title', title)}{_data('n_category', category)}</node>\n"
        )
    interest_ids: dict[str, str] = {}
    for interest, *_ in store.iter_nodes(shop, "interest"):
        interest_ids[interest] = _xml_attr("interest:" + interest)
        w(f"<node id={interest_ids[interest]}>{_data('n_type', 'interest')}{_data('n_id', interest)}</node>\n")

    tails: dict[tuple[str, int], str] = {}

    def tail(mv: str, rnd: int) -> str:
        key = (mv, rnd)
        if key not in tails:
            tails[key] = f"{_data('e_model_version', mv)}{_data('e_round', rnd)}</edge>\n"
        return tails[key]

    def edges(kind: str, rows, src_ids, dst_ids, src_prefix: str, with_rank: bool) -> None:
        head = _data("e_type", kind)
        last_src, last_quoted = None, ""
        for row in rows:
            src, dst, weight = row[0], row[1], row[2]
            if src != last_src:
                last_src = src
                last_quoted = src_ids[src] if src_ids is not None else _xml_attr(src_prefix + src)
            rank = f'<data key="e_rank">{row[3]}</data>' if with_rank else ""
            w(
                f"<edge source={last_quoted} target={dst_ids[dst]}>{head}"
                f'<data key="e_weight">{_weight(weight)}</data>{rank}{tail(row[-2], row[-1])}'
            )

    edges("interested_in", store.iter_edges(shop, "interested_in"), None, interest_ids, "user:", False)
    edges("recommended", store.iter_edges(shop, "recommended"), None, item_ids, "user:", True)
    edges("similar_to", store.iter_edges(shop, "similar_to"), item_ids, item_ids, "item:", False)
    w("</graph>\n</graphml>\n")


#: file name -> CSV header of the Neo4j export (the neo4j-admin import header format).
NEO4J_FILES: dict[str, list[str]] = {
    "users.csv": ["userId:ID(User)", "shop", "modelVersion", "round:int", "eventOffset", ":LABEL"],
    "items.csv": ["itemId:ID(Item)", "title", "category", "shop", "modelVersion", "round:int", ":LABEL"],
    "interests.csv": ["name:ID(Interest)", "itemCount:int", "shop", ":LABEL"],
    "interested_in.csv": [":START_ID(User)", ":END_ID(Interest)", "weight:float", "modelVersion", "round:int", ":TYPE"],
    "recommended.csv": [":START_ID(User)", ":END_ID(Item)", "weight:float", "rank:int", "modelVersion", "round:int", ":TYPE"],
    "similar_to.csv": [":START_ID(Item)", ":END_ID(Item)", "weight:float", "modelVersion", "round:int", ":TYPE"],
}


def _flatten(row: tuple) -> tuple:
    # neo4j-admin rejects line breaks inside fields unless --multiline-fields=true: flatten them.
    return tuple(v.replace("\r\n", " ").replace("\r", " ").replace("\n", " ") if isinstance(v, str) else v for v in row)


def _write_csv(target: Path, header: list[str], rows: Iterable[tuple]) -> int:
    count = 0

    def checked(rows: Iterable[tuple]) -> Iterator[tuple]:
        nonlocal count
        for row in rows:
            count += 1
            # csv writes None as "" (Neo4j reads an empty field as "no property").
            yield _flatten(row) if any(isinstance(v, str) and ("\n" in v or "\r" in v) for v in row) else row

    with atomic_path(target) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(checked(rows))
    return count


def _cypher_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def export_neo4j(store: GraphStore, shop: str, out_dir: str | Path) -> dict[str, Path]:
    """Write ``shop``'s graph as Neo4j import files into ``out_dir``; return name -> path.

    Nodes ``User`` / ``Item`` / ``Interest`` and relationships ``INTERESTED_IN`` (user ->
    interest), ``RECOMMENDED`` (user -> item, with ``rank``) and ``SIMILAR_TO`` (item -> item),
    each with a ``weight`` float, ``modelVersion`` and ``round``. Files: the CSVs of
    :data:`NEO4J_FILES` (typed headers for ``neo4j-admin database import``), ``import.cypher``
    (the same with ``LOAD CSV``) and ``README.txt``. Ids are shop-local, so the neo4j-admin
    route expects one shop per database; ``import.cypher`` keys nodes by shop and id instead.
    Line breaks inside titles are replaced by spaces. Each file is written atomically.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    counts: dict[str, int] = {}
    with store.snapshot():
        info = store.summary(shop)

        def put(name: str, rows: Iterable[Iterable[object]]) -> None:
            written[name] = out_dir / name
            counts[name] = _write_csv(written[name], NEO4J_FILES[name], rows)

        put("users.csv", ((u, shop, mv, rnd, off, "User") for u, mv, rnd, off in store.iter_nodes(shop, "user")))
        put("items.csv", ((i, t, c, shop, mv, rnd, "Item") for i, t, c, mv, rnd in store.iter_nodes(shop, "item")))
        put("interests.csv", ((c, n, shop, "Interest") for c, n, _mv, _rnd in store.iter_nodes(shop, "interest")))
        put(
            "interested_in.csv",
            ((u, c, _weight(w), mv, rnd, "INTERESTED_IN") for u, c, w, mv, rnd in store.iter_edges(shop, "interested_in")),
        )
        put(
            "recommended.csv",
            ((u, i, _weight(s), r, mv, rnd, "RECOMMENDED") for u, i, s, r, mv, rnd in store.iter_edges(shop, "recommended")),
        )
        put("similar_to.csv", ((a, b, _weight(s), mv, rnd, "SIMILAR_TO") for a, b, s, mv, rnd in store.iter_edges(shop, "similar_to")))

    written["import.cypher"] = atomic_write_text(out_dir / "import.cypher", _cypher_script(shop))
    written["README.txt"] = atomic_write_text(out_dir / "README.txt", _readme(shop, info, counts))
    return written


def _cypher_script(shop: str) -> str:
    s = _cypher_string(shop)
    batch = "} IN TRANSACTIONS OF 10000 ROWS;\n"
    return f"""// fedgraph interest graph of shop {s}: LOAD CSV import (alternative to neo4j-admin).
// Copy the *.csv files of this directory into Neo4j's import directory, then run
//   cypher-shell -u neo4j -p <password> -f import.cypher
// (in Neo4j Browser prefix each LOAD CSV statement with :auto). Re-running updates in place.
// Nodes are keyed by (shop, id), so several shops can share one database.
CREATE CONSTRAINT fedgraph_user IF NOT EXISTS FOR (n:User) REQUIRE (n.shop, n.userId) IS UNIQUE;
CREATE CONSTRAINT fedgraph_item IF NOT EXISTS FOR (n:Item) REQUIRE (n.shop, n.itemId) IS UNIQUE;
CREATE CONSTRAINT fedgraph_interest IF NOT EXISTS FOR (n:Interest) REQUIRE (n.shop, n.name) IS UNIQUE;

LOAD CSV WITH HEADERS FROM 'file:///users.csv' AS row
CALL {{ WITH row
  MERGE (u:User {{shop: {s}, userId: row.`userId:ID(User)`}})
  SET u.modelVersion = row.modelVersion, u.round = toInteger(row.`round:int`),
      u.eventOffset = row.eventOffset
{batch}
LOAD CSV WITH HEADERS FROM 'file:///items.csv' AS row
CALL {{ WITH row
  MERGE (i:Item {{shop: {s}, itemId: row.`itemId:ID(Item)`}})
  SET i.title = row.title, i.category = row.category, i.modelVersion = row.modelVersion,
      i.round = toInteger(row.`round:int`)
{batch}
LOAD CSV WITH HEADERS FROM 'file:///interests.csv' AS row
CALL {{ WITH row
  MERGE (c:Interest {{shop: {s}, name: row.`name:ID(Interest)`}})
  SET c.itemCount = toInteger(row.`itemCount:int`)
{batch}
LOAD CSV WITH HEADERS FROM 'file:///interested_in.csv' AS row
CALL {{ WITH row
  MATCH (u:User {{shop: {s}, userId: row.`:START_ID(User)`}})
  MATCH (c:Interest {{shop: {s}, name: row.`:END_ID(Interest)`}})
  MERGE (u)-[r:INTERESTED_IN]->(c)
  SET r.weight = toFloat(row.`weight:float`), r.modelVersion = row.modelVersion,
      r.round = toInteger(row.`round:int`)
{batch}
LOAD CSV WITH HEADERS FROM 'file:///recommended.csv' AS row
CALL {{ WITH row
  MATCH (u:User {{shop: {s}, userId: row.`:START_ID(User)`}})
  MATCH (i:Item {{shop: {s}, itemId: row.`:END_ID(Item)`}})
  MERGE (u)-[r:RECOMMENDED]->(i)
  SET r.weight = toFloat(row.`weight:float`), r.rank = toInteger(row.`rank:int`),
      r.modelVersion = row.modelVersion, r.round = toInteger(row.`round:int`)
{batch}
LOAD CSV WITH HEADERS FROM 'file:///similar_to.csv' AS row
CALL {{ WITH row
  MATCH (a:Item {{shop: {s}, itemId: row.`:START_ID(Item)`}})
  MATCH (b:Item {{shop: {s}, itemId: row.`:END_ID(Item)`}})
  MERGE (a)-[r:SIMILAR_TO]->(b)
  SET r.weight = toFloat(row.`weight:float`), r.modelVersion = row.modelVersion,
      r.round = toInteger(row.`round:int`)
{batch}"""


def _readme(shop: str, info, counts: dict[str, int]) -> str:
    lines = [
        f"fedgraph interest graph of shop {shop!r}: model {info.model_version or '?'}, "
        f"round {info.round}, event offset {info.event_offset or '-'}.",
        "",
        "Import into an empty Neo4j 5 database (stop it first; ids are shop-local, one shop per "
        "database) -- run from the Neo4j home with these files copied to import/:",
        "  bin/neo4j-admin database import full --overwrite-destination "
        "--nodes=import/users.csv --nodes=import/items.csv --nodes=import/interests.csv "
        "--relationships=import/interested_in.csv --relationships=import/recommended.csv "
        "--relationships=import/similar_to.csv neo4j",
        "Or, into a running database (any number of shops): copy the CSVs to import/ and run `cypher-shell -f import.cypher`.",
        "",
        "Rows: " + ", ".join(f"{name} {n}" for name, n in counts.items()),
    ]
    return "\n".join(lines) + "\n"

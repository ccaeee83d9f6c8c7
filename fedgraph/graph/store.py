"""Embedded SQLite store for the shops' interest graphs (no server, one file).

Layout: a ``graph_versions`` table logs every graph written (shop, model version, round,
creation time, input ``event_offset`` and counts; exactly one row per shop is *current*), node
tables ``users`` / ``items`` / ``interests`` and edge tables ``user_interest`` / ``user_item`` /
``item_item``. Every node and edge row carries its ``shop``, ``model_version`` and ``round``, so
after incremental :meth:`GraphStore.upsert_user` calls one can tell which model produced which
edge. Node and edge tables are clustered on their lookup key (``WITHOUT ROWID`` primary keys that
start with ``(shop, source id)``), so the queries below are index range scans and no secondary
indexes slow the bulk writes down.

Consistency: the database runs in WAL mode. :meth:`GraphStore.write` replaces a shop's graph in a
single transaction, so a reader (any process) sees the old graph or the new one, never a mix, and
a failure part-way leaves the old graph intact. Other shops are untouched.

A :class:`GraphStore` wraps one :mod:`sqlite3` connection: use one per thread.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain, islice, repeat
from pathlib import Path
from typing import Any

import numpy as np

from fedgraph.graph.builder import (
    ITEM_ITEM_DTYPE,
    USER_INTEREST_DTYPE,
    USER_ITEM_DTYPE,
    InterestGraph,
)

__all__ = [
    "GraphLookupError",
    "GraphStore",
    "GraphStoreError",
    "GraphSummary",
    "Interest",
    "Neighbour",
    "Recommendation",
]

APPLICATION_ID = 0x46474753  # "FGGS", in the SQLite header: marks the file as ours
SCHEMA_VERSION = 1
FORMAT_NAME = "fedgraph.graph_store"
#: How to get a fresh store; the CLI rebuilds RUN_DIR/graph.sqlite as the last step of a run.
BUILD_HINT = "`fedgraph simulate` (it writes RUN_DIR/graph.sqlite)"
_REBUILD_HINT = f"rebuild it by re-running {BUILD_HINT}"
_ROWS_PER_CHUNK = 65536
_ROWS_PER_STATEMENT = 200

_SCHEMA = [
    "CREATE TABLE fedgraph_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    """CREATE TABLE graph_versions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        shop TEXT NOT NULL,
        model_version TEXT NOT NULL,
        round INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        event_offset TEXT,
        is_current INTEGER NOT NULL DEFAULT 1,
        n_users INTEGER NOT NULL,
        n_items INTEGER NOT NULL,
        n_interests INTEGER NOT NULL,
        n_user_interest INTEGER NOT NULL,
        n_user_item INTEGER NOT NULL,
        n_item_item INTEGER NOT NULL,
        n_upserts INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE UNIQUE INDEX graph_versions_current ON graph_versions (shop) WHERE is_current = 1",
    "CREATE INDEX graph_versions_shop ON graph_versions (shop, id)",
    """CREATE TABLE users (
        shop TEXT NOT NULL, user_id TEXT NOT NULL,
        model_version TEXT NOT NULL, round INTEGER NOT NULL, event_offset TEXT,
        PRIMARY KEY (shop, user_id)) WITHOUT ROWID""",
    """CREATE TABLE items (
        shop TEXT NOT NULL, item_id TEXT NOT NULL, title TEXT NOT NULL, category TEXT NOT NULL,
        model_version TEXT NOT NULL, round INTEGER NOT NULL,
        PRIMARY KEY (shop, item_id)) WITHOUT ROWID""",
    """CREATE TABLE interests (
        shop TEXT NOT NULL, interest TEXT NOT NULL, n_items INTEGER NOT NULL,
        model_version TEXT NOT NULL, round INTEGER NOT NULL,
        PRIMARY KEY (shop, interest)) WITHOUT ROWID""",
    """CREATE TABLE user_interest (
        shop TEXT NOT NULL, user_id TEXT NOT NULL, interest TEXT NOT NULL, weight REAL NOT NULL,
        model_version TEXT NOT NULL, round INTEGER NOT NULL,
        PRIMARY KEY (shop, user_id, interest)) WITHOUT ROWID""",
    """CREATE TABLE user_item (
        shop TEXT NOT NULL, user_id TEXT NOT NULL, item_id TEXT NOT NULL, score REAL NOT NULL,
        rank INTEGER NOT NULL, model_version TEXT NOT NULL, round INTEGER NOT NULL,
        PRIMARY KEY (shop, user_id, item_id)) WITHOUT ROWID""",
    """CREATE TABLE item_item (
        shop TEXT NOT NULL, src_item_id TEXT NOT NULL, dst_item_id TEXT NOT NULL,
        similarity REAL NOT NULL, model_version TEXT NOT NULL, round INTEGER NOT NULL,
        PRIMARY KEY (shop, src_item_id, dst_item_id)) WITHOUT ROWID""",
]
_GRAPH_TABLES = ("users", "items", "interests", "user_interest", "user_item", "item_item")
_REQUIRED_TABLES = frozenset(("fedgraph_meta", "graph_versions") + _GRAPH_TABLES)
_CORRUPT_CODES = {"SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_IOERR_SHORT_READ"}

NODE_KINDS = ("user", "item", "interest")
EDGE_KINDS = ("interested_in", "recommended", "similar_to")


class GraphStoreError(RuntimeError):
    """The file is not a usable fedgraph graph store (missing, foreign, corrupt, locked...)."""


class GraphLookupError(KeyError):
    """An unknown shop, user or item; the message says what does exist."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.message


@dataclass(frozen=True)
class Interest:
    interest: str
    weight: float
    model_version: str
    round: int


@dataclass(frozen=True)
class Recommendation:
    item: str
    score: float
    rank: int
    title: str
    category: str
    model_version: str
    round: int


@dataclass(frozen=True)
class Neighbour:
    item: str
    similarity: float
    title: str
    category: str


class GraphSummary(dict):
    """Summary of one graph version: a plain ``dict`` (JSON-serialisable, ``.items()``) whose
    keys can also be read as attributes (``summary.n_users``).

    Keys: shop, model_version, round, created_at, updated_at (ISO-8601 UTC), event_offset,
    n_users, n_items, n_interests, n_user_interest, n_user_item, n_item_item, n_upserts
    (incremental :meth:`GraphStore.upsert_user` calls since the write), is_current.
    """

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


_SUMMARY_KEYS = (
    "shop",
    "model_version",
    "round",
    "created_at",
    "updated_at",
    "event_offset",
    "n_users",
    "n_items",
    "n_interests",
    "n_user_interest",
    "n_user_item",
    "n_item_item",
    "n_upserts",
    "is_current",
)
_SUMMARY_COLUMNS = ", ".join(_SUMMARY_KEYS)


def _summary(row: Sequence[Any]) -> GraphSummary:
    summary = GraphSummary(zip(_SUMMARY_KEYS, row))
    summary["is_current"] = bool(summary["is_current"])
    return summary


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- rows for the bulk write, streamed in chunks so no full list of tuples is built -----------
# (module-level so tests can wrap them to inject a failure part-way through a write)


def _edge_rows(graph: InterestGraph, edges: np.ndarray, columns: Sequence[Any]) -> Iterator[tuple]:
    """Yield ``(shop, *columns, model_version, round)``; columns are (array, lookup|None)."""
    for start in range(0, len(edges), _ROWS_PER_CHUNK):
        chunk = edges[start : start + _ROWS_PER_CHUNK]
        cols = []
        for field, lookup in columns:
            values = chunk[field]
            cols.append(lookup[values].tolist() if lookup is not None else values.tolist())
        yield from zip(repeat(graph.shop), *cols, repeat(graph.model_version), repeat(graph.round))


def _user_rows(graph: InterestGraph, order: np.ndarray) -> Iterator[tuple]:
    users = graph.users
    for i in order.tolist():
        yield (graph.shop, users[i], graph.model_version, graph.round, graph.event_offset)


def _item_rows(graph: InterestGraph) -> Iterator[tuple]:
    for item, title, category in zip(graph.items, graph.item_titles, graph.item_categories):
        yield (graph.shop, item, title, category, graph.model_version, graph.round)


def _interest_rows(graph: InterestGraph) -> Iterator[tuple]:
    counts: dict[str, int] = {}
    for category in graph.item_categories:
        counts[category] = counts.get(category, 0) + 1
    for interest in graph.interests:
        yield (graph.shop, interest, counts.get(interest, 0), graph.model_version, graph.round)


def _user_interest_rows(graph: InterestGraph, edges: np.ndarray, users: np.ndarray, interests: np.ndarray) -> Iterator[tuple]:
    return _edge_rows(graph, edges, [("user_idx", users), ("interest_idx", interests), ("weight", None)])


def _user_item_rows(graph: InterestGraph, edges: np.ndarray, users: np.ndarray, items: np.ndarray) -> Iterator[tuple]:
    return _edge_rows(graph, edges, [("user_idx", users), ("item_idx", items), ("score", None), ("rank", None)])


def _item_item_rows(graph: InterestGraph, edges: np.ndarray, items: np.ndarray) -> Iterator[tuple]:
    return _edge_rows(graph, edges, [("src_idx", items), ("dst_idx", items), ("similarity", None)])


def _bulk_insert(conn: sqlite3.Connection, table: str, n_cols: int, rows: Iterable[tuple]) -> None:
    """``INSERT`` rows with multi-row ``VALUES`` statements (as many rows per statement as
    SQLite's variable limit allows) instead of ``executemany``, which pays Python's
    per-statement overhead for every row (figures: simulations/RESULTS.md, 'Implementation measurements')."""
    try:
        max_vars = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)  # Python >= 3.11
    except AttributeError:
        max_vars = 999  # the lowest SQLite has ever allowed
    per_statement = max(1, min(_ROWS_PER_STATEMENT, max_vars // n_cols))
    one = "(" + ", ".join("?" * n_cols) + ")"
    full_sql = f"INSERT INTO {table} VALUES " + ", ".join([one] * per_statement)
    it = iter(rows)
    while True:
        values = list(chain.from_iterable(islice(it, per_statement)))
        if len(values) == per_statement * n_cols:
            conn.execute(full_sql, values)
            continue
        if values:
            if len(values) % n_cols:
                raise ValueError(f"row of the wrong width for table {table}")
            conn.execute(f"INSERT INTO {table} VALUES " + ", ".join([one] * (len(values) // n_cols)), values)
        return


def _sorted_by_source(edges: np.ndarray, field: str, position: np.ndarray) -> np.ndarray:
    """Order edges by their source's position in id order (appends to the clustered key)."""
    if len(edges) == 0:
        return edges
    return edges[np.argsort(position[edges[field]], kind="stable")]


class GraphStore:
    """One SQLite file holding the current interest graph of any number of shops.

    ``GraphStore(path)`` creates the file if it does not exist (``create=False`` makes that an
    error instead). Opening anything that is not a fedgraph graph store raises
    :class:`GraphStoreError` naming the file.
    """

    def __init__(self, path: str | Path, *, create: bool = True, timeout: float = 30.0):
        self.path = Path(path)
        if self.path.is_dir():
            raise GraphStoreError(f"{self.path} is a directory, not a fedgraph graph store file")
        existing = self.path.exists() and self.path.stat().st_size > 0
        if existing:
            with open(self.path, "rb") as handle:
                header = handle.read(16)
            if header != b"SQLite format 3\x00":
                raise GraphStoreError(
                    f"{self.path} is not a fedgraph graph store (not an SQLite database, or its header is damaged); {_REBUILD_HINT}"
                )
        elif not create:
            raise GraphStoreError(f"no graph store at {self.path}; build one with {BUILD_HINT}")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None, cached_statements=64)
        except sqlite3.Error as exc:
            raise GraphStoreError(f"cannot open graph store {self.path}: {exc}") from exc
        try:
            with self._errors():
                self._open(create)
        except BaseException:
            self._conn.close()
            raise

    # --- connection management --------------------------------------------------------------

    def _open(self, create: bool) -> None:
        conn = self._conn
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        tables.discard("sqlite_sequence")
        if app_id == 0 and not tables:
            if not create:
                raise GraphStoreError(f"{self.path} is an empty database, not a graph store; build one with {BUILD_HINT}")
            self._create_schema()
        elif app_id != APPLICATION_ID:
            shown = ", ".join(sorted(tables)[:8]) or "none"
            raise GraphStoreError(
                f"{self.path} is an SQLite database but not a fedgraph graph store "
                f"(tables: {shown}); point to the graph store or {_REBUILD_HINT}"
            )
        else:
            missing = _REQUIRED_TABLES - tables
            meta = {}
            if "fedgraph_meta" in tables:
                meta = dict(conn.execute("SELECT key, value FROM fedgraph_meta"))
            if missing or meta.get("format") != FORMAT_NAME:
                raise GraphStoreError(
                    f"graph store {self.path} is incomplete or damaged (missing tables: "
                    f"{', '.join(sorted(missing)) or 'none'}); {_REBUILD_HINT}"
                )
            version = int(meta.get("schema_version", "0"))
            if version > SCHEMA_VERSION:
                raise GraphStoreError(
                    f"graph store {self.path} has schema version {version}, newer than this "
                    f"fedgraph supports ({SCHEMA_VERSION}); upgrade fedgraph or {_REBUILD_HINT}"
                )
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":  # e.g. a network file system without shared memory
            raise GraphStoreError(f"cannot put graph store {self.path} in WAL mode (got {mode!r})")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA journal_size_limit=67108864")

    def _create_schema(self) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            taken = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if taken == 0:  # nobody else created it meanwhile
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.executemany(
                    "INSERT INTO fedgraph_meta (key, value) VALUES (?, ?)",
                    [("format", FORMAT_NAME), ("schema_version", str(SCHEMA_VERSION)), ("created_at", _now())],
                )
                conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn SQLite failures into :class:`GraphStoreError` naming the file."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            name = getattr(exc, "sqlite_errorname", "") or ""
            text = str(exc)
            if name in _CORRUPT_CODES or "malformed" in text or "not a database" in text:
                raise GraphStoreError(
                    f"graph store {self.path} is corrupt or not a fedgraph graph store ({text}); {_REBUILD_HINT}"
                ) from exc
            if "locked" in text or "busy" in text:
                raise GraphStoreError(f"graph store {self.path} is locked by another writer ({text}); retry later") from exc
            raise GraphStoreError(f"graph store {self.path}: {text}") from exc

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: all or nothing."""
        conn = self._conn
        if conn.in_transaction:
            raise GraphStoreError("nested write transaction (GraphStore is not re-entrant)")
        with self._errors():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[GraphStore]:
        """Read several queries from one consistent snapshot (a concurrent write is invisible).

        Nested use is fine; only the outermost block opens and closes the read transaction.
        """
        conn = self._conn
        if conn.in_transaction:
            with self._errors():
                yield self
            return
        with self._errors():
            conn.execute("BEGIN")
            try:
                yield self
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> GraphStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GraphStore({str(self.path)!r})"

    def check(self) -> None:
        """Run SQLite's integrity check over the whole file (slow on big stores)."""
        with self._errors():
            problems = [r[0] for r in self._conn.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise GraphStoreError(f"graph store {self.path} is corrupt ({'; '.join(problems[:3])}); {_REBUILD_HINT}")

    # --- writes ---------------------------------------------------------------------------------

    def write(self, graph: InterestGraph) -> GraphSummary:
        """Replace ``graph.shop``'s current graph with ``graph``, atomically.

        Everything happens in one transaction: concurrent readers keep seeing the previous graph
        until the commit, and any failure rolls back to it. Returns the new summary.
        """
        graph.validate()
        shop = graph.shop
        user_pos = np.empty(graph.num_users, dtype=np.int64)
        user_order = np.argsort(np.asarray(graph.users, dtype=object), kind="stable") if graph.num_users else np.zeros(0, dtype=np.int64)
        user_pos[user_order] = np.arange(graph.num_users)
        item_pos = np.empty(graph.num_items, dtype=np.int64)
        item_order = np.argsort(np.asarray(graph.items, dtype=object), kind="stable") if graph.num_items else np.zeros(0, dtype=np.int64)
        item_pos[item_order] = np.arange(graph.num_items)
        users = np.asarray(graph.users, dtype=object)
        items = np.asarray(graph.items, dtype=object)
        interests = np.asarray(graph.interests, dtype=object)
        now = _now()
        with self._transaction() as conn:
            for table in _GRAPH_TABLES:
                conn.execute(f"DELETE FROM {table} WHERE shop = ?", (shop,))
            conn.execute("UPDATE graph_versions SET is_current = 0 WHERE shop = ? AND is_current = 1", (shop,))
            _bulk_insert(conn, "users", 5, _user_rows(graph, user_order))
            _bulk_insert(conn, "items", 6, _item_rows(graph))
            _bulk_insert(conn, "interests", 5, _interest_rows(graph))
            _bulk_insert(
                conn,
                "user_interest",
                6,
                _user_interest_rows(graph, _sorted_by_source(graph.user_interest, "user_idx", user_pos), users, interests),
            )
            _bulk_insert(
                conn, "user_item", 7, _user_item_rows(graph, _sorted_by_source(graph.user_item, "user_idx", user_pos), users, items)
            )
            _bulk_insert(conn, "item_item", 6, _item_item_rows(graph, _sorted_by_source(graph.item_item, "src_idx", item_pos), items))
            conn.execute(
                "INSERT INTO graph_versions (shop, model_version, round, created_at, updated_at, "
                "event_offset, is_current, n_users, n_items, n_interests, n_user_interest, "
                "n_user_item, n_item_item) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?)",
                (
                    shop,
                    graph.model_version,
                    graph.round,
                    now,
                    now,
                    graph.event_offset,
                    graph.num_users,
                    graph.num_items,
                    graph.num_interests,
                    len(graph.user_interest),
                    len(graph.user_item),
                    len(graph.item_item),
                ),
            )
        return self.summary(shop)

    def upsert_user(
        self,
        shop: str,
        user: str,
        interests: Iterable[tuple[str, float]],
        recommendations: Iterable[tuple[str, float]],
        model_version: str,
        round: int,
        event_offset: str | None = None,
    ) -> None:
        """Insert or replace one user's interest and recommendation edges, in one transaction.

        ``recommendations`` are ``(item, score)`` pairs; ranks are assigned by score, highest
        first. The shop must already have a graph, and every item and interest must exist in it
        (:class:`GraphLookupError` otherwise, with nothing changed). The user's node and new edges
        record ``model_version``, ``round`` and ``event_offset``; the rest of the graph keeps its
        own, so the shop's summary still reports the model of its last full :meth:`write`.
        """
        user = str(user)
        interest_rows = _pairs("interests", interests)
        rec_rows = sorted(_pairs("recommendations", recommendations), key=lambda p: -p[1])
        with self._transaction() as conn:
            version_id = self._current(shop)[0]
            for item, _ in rec_rows:
                if conn.execute("SELECT 1 FROM items WHERE shop = ? AND item_id = ?", (shop, item)).fetchone() is None:
                    raise self._missing("item", shop, item)
            for interest, _ in interest_rows:
                if conn.execute("SELECT 1 FROM interests WHERE shop = ? AND interest = ?", (shop, interest)).fetchone() is None:
                    raise self._missing("interest", shop, interest)
            is_new = conn.execute("SELECT 1 FROM users WHERE shop = ? AND user_id = ?", (shop, user)).fetchone() is None
            conn.execute(
                "INSERT INTO users VALUES (?, ?, ?, ?, ?) ON CONFLICT (shop, user_id) DO UPDATE SET "
                "model_version = excluded.model_version, round = excluded.round, "
                "event_offset = excluded.event_offset",
                (shop, user, str(model_version), int(round), event_offset),
            )
            gone_interests = conn.execute("DELETE FROM user_interest WHERE shop = ? AND user_id = ?", (shop, user)).rowcount
            gone_recs = conn.execute("DELETE FROM user_item WHERE shop = ? AND user_id = ?", (shop, user)).rowcount
            conn.executemany(
                "INSERT INTO user_interest VALUES (?, ?, ?, ?, ?, ?)",
                [(shop, user, i, w, str(model_version), int(round)) for i, w in interest_rows],
            )
            conn.executemany(
                "INSERT INTO user_item VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(shop, user, item, s, rank, str(model_version), int(round)) for rank, (item, s) in enumerate(rec_rows, start=1)],
            )
            conn.execute(
                "UPDATE graph_versions SET n_users = n_users + ?, "
                "n_user_interest = n_user_interest + ?, n_user_item = n_user_item + ?, "
                "n_upserts = n_upserts + 1, updated_at = ? WHERE id = ?",
                (int(is_new), len(interest_rows) - gone_interests, len(rec_rows) - gone_recs, _now(), version_id),
            )

    def forget_user(self, shop: str, user: str) -> int:
        """Erase one customer from ``shop``'s graph: their node and every edge from it, in one
        transaction, then rewrite the file (``secure_delete``, ``VACUUM``, WAL truncated) so that
        no byte of the removed rows remains in it. Returns the rows removed (0: not in the graph;
        an unknown shop is not an error, there is nothing to forget)."""
        user = str(user)
        with self._errors():
            self._conn.execute("PRAGMA secure_delete = ON")
        with self._transaction() as conn:
            current = conn.execute("SELECT id FROM graph_versions WHERE shop = ? AND is_current = 1", (shop,)).fetchone()
            node = conn.execute("DELETE FROM users WHERE shop = ? AND user_id = ?", (shop, user)).rowcount
            interests = conn.execute("DELETE FROM user_interest WHERE shop = ? AND user_id = ?", (shop, user)).rowcount
            recommendations = conn.execute("DELETE FROM user_item WHERE shop = ? AND user_id = ?", (shop, user)).rowcount
            if current is not None and node + interests + recommendations:
                conn.execute(
                    "UPDATE graph_versions SET n_users = n_users - ?, n_user_interest = n_user_interest - ?, "
                    "n_user_item = n_user_item - ?, updated_at = ? WHERE id = ?",
                    (node, interests, recommendations, _now(), current[0]),
                )
        self.compact()
        return node + interests + recommendations

    def compact(self) -> None:
        """Rewrite the file without free pages and empty the write-ahead log, so deleted rows are
        gone from the bytes on disk, not only from the tables."""
        with self._errors():
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.execute("VACUUM")
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # --- queries --------------------------------------------------------------------------------

    def shops(self) -> list[str]:
        """Shops that have a graph, sorted by name."""
        with self._errors():
            return [r[0] for r in self._conn.execute("SELECT shop FROM graph_versions WHERE is_current = 1 ORDER BY shop")]

    def summary(self, shop: str) -> GraphSummary:
        """Counts, model version, round and timestamps of ``shop``'s current graph."""
        with self.snapshot():
            row = self._conn.execute(f"SELECT {_SUMMARY_COLUMNS} FROM graph_versions WHERE shop = ? AND is_current = 1", (shop,)).fetchone()
            if row is None:
                raise self._missing_shop(shop)
            return _summary(row)

    def versions(self, shop: str) -> list[GraphSummary]:
        """Every graph ever written for ``shop``, newest first (counts as of its last update)."""
        with self.snapshot():
            rows = self._conn.execute(f"SELECT {_SUMMARY_COLUMNS} FROM graph_versions WHERE shop = ? ORDER BY id DESC", (shop,)).fetchall()
            if not rows:
                raise self._missing_shop(shop)
            return [_summary(r) for r in rows]

    def user_interests(self, shop: str, user: str, k: int = 5) -> list[Interest]:
        """The user's top ``k`` interests, highest weight first."""
        k = _check_k(k)
        with self.snapshot():
            rows = self._conn.execute(
                "SELECT interest, weight, model_version, round FROM user_interest "
                "WHERE shop = ? AND user_id = ? ORDER BY weight DESC, interest LIMIT ?",
                (shop, str(user), k),
            ).fetchall()
            if not rows:
                self._require("user", shop, str(user))
            return [Interest(*r) for r in rows]

    def user_recommendations(self, shop: str, user: str, k: int = 10) -> list[Recommendation]:
        """The user's top ``k`` recommended items with title and category, best first."""
        k = _check_k(k)
        with self.snapshot():
            rows = self._conn.execute(
                "SELECT r.item_id, r.score, r.rank, coalesce(i.title, ''), coalesce(i.category, ''), "
                "r.model_version, r.round FROM user_item r LEFT JOIN items i "
                "ON i.shop = r.shop AND i.item_id = r.item_id "
                "WHERE r.shop = ? AND r.user_id = ? ORDER BY r.score DESC, r.rank LIMIT ?",
                (shop, str(user), k),
            ).fetchall()
            if not rows:
                self._require("user", shop, str(user))
            return [Recommendation(*r) for r in rows]

    def interest_audience(self, shop: str, interest: str, k: int = 100) -> list[tuple[str, float]]:
        """The ``k`` customers of ``shop`` most interested in ``interest``: ``(user, weight)`` pairs
        of their ``interested_in`` edges, highest weight first (ties by user id). Only customers
        whose top interests (``graph.top_k_interests``) include it have such an edge.

        Raises:
            GraphLookupError: unknown shop or interest (the message lists the shop's interests).
        """
        k = _check_k(k)
        with self.snapshot():
            self._require("interest", shop, interest)
            rows = self._conn.execute(
                "SELECT user_id, weight FROM user_interest WHERE shop = ? AND interest = ? ORDER BY weight DESC, user_id LIMIT ?",
                (shop, interest, k),
            ).fetchall()
        return [(str(u), float(w)) for u, w in rows]

    def interests(self, shop: str) -> list[str]:
        """The interest nodes of ``shop``'s graph, sorted."""
        with self.snapshot():
            self._current(shop)
            return [r[0] for r in self._conn.execute("SELECT interest FROM interests WHERE shop = ? ORDER BY interest", (shop,))]

    def item_neighbours(self, shop: str, item: str, k: int = 10) -> list[Neighbour]:
        """The item's ``k`` most similar items with titles, most similar first."""
        k = _check_k(k)
        with self.snapshot():
            rows = self._conn.execute(
                "SELECT n.dst_item_id, n.similarity, coalesce(i.title, ''), coalesce(i.category, '') "
                "FROM item_item n LEFT JOIN items i ON i.shop = n.shop AND i.item_id = n.dst_item_id "
                "WHERE n.shop = ? AND n.src_item_id = ? ORDER BY n.similarity DESC, n.dst_item_id "
                "LIMIT ?",
                (shop, str(item), k),
            ).fetchall()
            if not rows:
                self._require("item", shop, str(item))
            return [Neighbour(*r) for r in rows]

    # --- bulk reads (exports, PyG) --------------------------------------------------------------

    def iter_nodes(self, shop: str, kind: str) -> Iterator[tuple]:
        """Stream ``shop``'s nodes of ``kind`` (``user``, ``item`` or ``interest``), by id.

        Rows: user ``(user_id, model_version, round, event_offset)``; item ``(item_id, title,
        category, model_version, round)``; interest ``(interest, n_items, model_version, round)``.
        Wrap several calls in :meth:`snapshot` for a consistent view.
        """
        sql = {
            "user": "SELECT user_id, model_version, round, event_offset FROM users WHERE shop = ? ORDER BY user_id",
            "item": "SELECT item_id, title, category, model_version, round FROM items WHERE shop = ? ORDER BY item_id",
            "interest": "SELECT interest, n_items, model_version, round FROM interests WHERE shop = ? ORDER BY interest",
        }
        if kind not in sql:
            raise ValueError(f"node kind must be one of {NODE_KINDS}, got {kind!r}")
        return self._stream(shop, sql[kind])

    def iter_edges(self, shop: str, kind: str) -> Iterator[tuple]:
        """Stream ``shop``'s edges of ``kind``, grouped by source, best first within a source.

        Rows: ``interested_in`` ``(user_id, interest, weight, model_version, round)``;
        ``recommended`` ``(user_id, item_id, score, rank, model_version, round)``;
        ``similar_to`` ``(src_item_id, dst_item_id, similarity, model_version, round)``.
        """
        sql = {
            "interested_in": "SELECT user_id, interest, weight, model_version, round "
            "FROM user_interest WHERE shop = ? ORDER BY user_id, weight DESC",
            "recommended": "SELECT user_id, item_id, score, rank, model_version, round "
            "FROM user_item WHERE shop = ? ORDER BY user_id, rank",
            "similar_to": "SELECT src_item_id, dst_item_id, similarity, model_version, round "
            "FROM item_item WHERE shop = ? ORDER BY src_item_id, similarity DESC",
        }
        if kind not in sql:
            raise ValueError(f"edge kind must be one of {EDGE_KINDS}, got {kind!r}")
        return self._stream(shop, sql[kind])

    def _stream(self, shop: str, sql: str) -> Iterator[tuple]:
        self.summary(shop)  # raises GraphLookupError for an unknown shop, before iterating
        cursor = self._conn.execute(sql, (shop,))

        def rows() -> Iterator[tuple]:
            with self._errors():
                while True:
                    batch = cursor.fetchmany(10000)
                    if not batch:
                        return
                    yield from batch

        return rows()

    def read_graph(self, shop: str) -> InterestGraph:
        """Load ``shop``'s current graph back as an :class:`InterestGraph` (e.g. for PyG).

        Node order is by id; ``model_version``/``round``/``event_offset`` are those of the last
        full write (edges added by :meth:`upsert_user` may come from another model).
        """
        with self.snapshot():
            info = self.summary(shop)
            users = [r[0] for r in self.iter_nodes(shop, "user")]
            item_rows = list(self.iter_nodes(shop, "item"))
            interests = [r[0] for r in self.iter_nodes(shop, "interest")]
            u_ix = {u: i for i, u in enumerate(users)}
            i_ix = {r[0]: i for i, r in enumerate(item_rows)}
            c_ix = {c: i for i, c in enumerate(interests)}
            ui = _to_struct(((u_ix[u], c_ix[c], w) for u, c, w, *_ in self.iter_edges(shop, "interested_in")), USER_INTEREST_DTYPE)
            ur = _to_struct(((u_ix[u], i_ix[it], s, r) for u, it, s, r, *_ in self.iter_edges(shop, "recommended")), USER_ITEM_DTYPE)
            ii = _to_struct(((i_ix[a], i_ix[b], s) for a, b, s, *_ in self.iter_edges(shop, "similar_to")), ITEM_ITEM_DTYPE)
        return InterestGraph(
            shop=shop,
            model_version=info.model_version,
            round=info.round,
            users=users,
            items=[r[0] for r in item_rows],
            item_titles=[r[1] for r in item_rows],
            item_categories=[r[2] for r in item_rows],
            interests=interests,
            user_interest=ui,
            user_item=ur,
            item_item=ii,
            event_offset=info.event_offset,
        )

    # --- lookup errors --------------------------------------------------------------------------

    def _current(self, shop: str) -> tuple:
        row = self._conn.execute(
            "SELECT id, n_users, n_items, n_interests FROM graph_versions WHERE shop = ? AND is_current = 1", (shop,)
        ).fetchone()
        if row is None:
            raise self._missing_shop(shop)
        return row

    def _missing_shop(self, shop: str) -> GraphLookupError:
        shops = self.shops()
        if not shops:
            return GraphLookupError(f"shop {shop!r} not in graph store {self.path} (it holds no graphs yet; build them with {BUILD_HINT})")
        shown = ", ".join(repr(s) for s in shops[:10]) + (", ..." if len(shops) > 10 else "")
        noun = "shop" if len(shops) == 1 else "shops"
        return GraphLookupError(f"shop {shop!r} not in graph store {self.path} ({len(shops)} {noun}: {shown})")

    def _require(self, kind: str, shop: str, key: str) -> None:
        """Raise :class:`GraphLookupError` unless node ``key`` of ``kind`` exists in ``shop``."""
        table, column = {"user": ("users", "user_id"), "item": ("items", "item_id"), "interest": ("interests", "interest")}[kind]
        self._current(shop)
        if self._conn.execute(f"SELECT 1 FROM {table} WHERE shop = ? AND {column} = ?", (shop, key)).fetchone() is None:
            raise self._missing(kind, shop, key)

    def _missing(self, kind: str, shop: str, key: str) -> GraphLookupError:
        table, column = {"user": ("users", "user_id"), "item": ("items", "item_id"), "interest": ("interests", "interest")}[kind]
        _, n_users, n_items, n_interests = self._current(shop)
        count = {"user": n_users, "item": n_items, "interest": n_interests}[kind]
        # Nearby ids in sort order (cheap via the primary key, and shows typos / format slips).
        near = [
            r[0]
            for r in self._conn.execute(
                f"SELECT {column} FROM {table} WHERE shop = ? AND {column} >= ? ORDER BY {column} LIMIT 3", (shop, key)
            )
        ]
        if len(near) < 3:
            near += [
                r[0]
                for r in self._conn.execute(
                    f"SELECT {column} FROM {table} WHERE shop = ? AND {column} < ? ORDER BY {column} DESC LIMIT ?",
                    (shop, key, 3 - len(near)),
                )
            ][::-1]
        plural = "interests" if kind == "interest" else f"{kind}s"
        if not near:
            return GraphLookupError(f"{kind} {key!r} not in shop {shop!r} (it has no {plural})")
        shown = ", ".join(repr(n) for n in sorted(near)) + (", ..." if count > len(near) else "")
        noun = plural if count != 1 else kind
        return GraphLookupError(f"{kind} {key!r} not in shop {shop!r} ({count} {noun}; e.g. {shown})")


def _check_k(k: int) -> int:
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return k


def _pairs(name: str, pairs: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    seen: set[str] = set()
    for key, value in pairs:
        key, value = str(key), float(value)
        if not math.isfinite(value):
            raise ValueError(f"{name}: non-finite weight for {key!r}")
        if key in seen:
            raise ValueError(f"{name}: {key!r} listed twice")
        seen.add(key)
        out.append((key, value))
    return out


def _to_struct(rows: Iterable[tuple], dtype: np.dtype) -> np.ndarray:
    return np.array(list(rows), dtype=dtype)

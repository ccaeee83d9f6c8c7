"""Exactly-once ingestion of a shop's events from a drop folder or an SQLite table.

Everything a shop has ingested lives in one SQLite file, the *event log*
(``STATE_DIR/events.sqlite``, WAL mode):

* ``events``: one row per event, keyed by ``event_id`` (so an event delivered twice -- the same
  file dropped again, a file re-read after a crash, overlapping exports -- is stored once) and
  numbered by ``seq``, the shop's *event offset* (monotonic, never reused);
* ``sources``: every drop-folder file seen (by SHA-256 of its bytes), with its outcome;
* ``offsets``: named positions, e.g. the last ``rowid`` read from an SQLite source table and the
  event offset the interest graph reflects;
* ``bad_rows``: rows of an SQLite source that failed validation (with the reason);
* ``forgotten``: customers erased on request (:mod:`fedgraph.deploy.forget`), as a keyed
  digest (HMAC-SHA256 under ``forget_key``, a random key kept in this file), never their id;
  an event of such a customer dated up to the request is dropped at ingestion, so a re-delivered
  export cannot bring them back.

A file's events, its ``sources`` row and (for SQLite) the new read position are committed in
*one* transaction, so a crash at any point either ingested the whole file or none of it; the
file is moved to ``processed/`` only after the commit, and a file found again after a crash
(same bytes) is recognised and just moved. Events are never counted twice, and nothing that was
committed is lost.

Drop-folder rules: ``*.csv``, ``*.csv.gz`` and ``*.parquet`` files with columns ``event_id, user,
item, timestamp, kind, weight`` (``shop`` optional; if present it must be this shop). Names
starting with ``.`` or ending in ``.tmp``/``.part`` are ignored (write under such a name, then
rename), and a file is only read once its size and mtime have been stable for
``source.settle_s`` seconds. A file that cannot be read or fails validation (a half-written CSV,
a truncated Parquet, an unknown item...) is moved to ``quarantine/`` with a ``.reason.txt``
next to it and an ``error`` log line; ingestion goes on with the next file.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedgraph.data.loaders import DataValidationError, read_table, validate_event_log, write_table
from fedgraph.data.schema import SEARCH_KIND
from fedgraph.deploy.logs import EventLogger

SUFFIXES = (".csv", ".csv.gz", ".parquet")
_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        user TEXT NOT NULL, item TEXT NOT NULL, ts INTEGER NOT NULL,
        kind TEXT NOT NULL, weight REAL NOT NULL,
        source TEXT NOT NULL, ingested_at REAL NOT NULL, query TEXT NOT NULL DEFAULT '')""",
    "CREATE INDEX IF NOT EXISTS events_user ON events (user, seq)",
    """CREATE TABLE IF NOT EXISTS sources (
        sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL,
        rows INTEGER NOT NULL, new_rows INTEGER NOT NULL, at REAL NOT NULL, detail TEXT)""",
    "CREATE TABLE IF NOT EXISTS offsets (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS bad_rows (
        id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL, position INTEGER,
        reason TEXT NOT NULL, at REAL NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS forgotten (digest TEXT PRIMARY KEY, before_ts INTEGER NOT NULL, at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS forget_key (id INTEGER PRIMARY KEY CHECK (id = 1), key BLOB NOT NULL)",
]


@dataclass
class IngestReport:
    files: int = 0
    rows: int = 0
    new_events: int = 0
    duplicates: int = 0
    quarantined: int = 0

    def __bool__(self) -> bool:
        return bool(self.files or self.rows or self.quarantined)


class EventLog:
    """The shop's ingested events (see module docs). One instance per thread."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")  # an acknowledged ingest survives power loss
        with self._tx() as c:
            for statement in _SCHEMA:
                c.execute(statement)
            # A log written before searches were ingested (issue 14.4): add their text column.
            if "query" not in {row[1] for row in c.execute("PRAGMA table_info(events)")}:
                c.execute("ALTER TABLE events ADD COLUMN query TEXT NOT NULL DEFAULT ''")

    def close(self) -> None:
        self._conn.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            yield c
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------ writes
    def ingest(self, events: pd.DataFrame, *, source: str, name: str, offset: tuple[str, int] | None = None) -> tuple[int, int]:
        """Add validated ``events``; returns (rows, new events). All or nothing, with ``offset``.

        Rows not counted as new: event ids already stored, and events of a forgotten customer
        dated up to their erasure request (:meth:`forget_user`)."""
        now = time.time()
        events = events[~self.forgotten_mask(events)]
        ts = events["timestamp"].to_numpy(dtype="datetime64[s]").astype(np.int64).tolist()
        queries = events["query"].fillna("").astype(str) if "query" in events.columns else pd.Series([""] * len(events))
        rows = list(
            zip(
                events["event_id"].astype(str),
                events["user"].astype(str),
                events["item"].astype(str),
                ts,
                events["kind"].astype(str),
                events["weight"].astype(float),
                queries,
            )
        )
        with self._tx() as c:
            # Skip known event ids first, so that offsets stay dense (offset == events ingested).
            known: set[str] = set()
            ids = [r[0] for r in rows]
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                known.update(
                    x[0] for x in c.execute(f"SELECT event_id FROM events WHERE event_id IN ({','.join('?' * len(chunk))})", chunk)
                )
            fresh, seen = [], set()
            for r in rows:
                if r[0] not in known and r[0] not in seen:
                    seen.add(r[0])
                    fresh.append((*r, name, now))
            c.executemany(
                "INSERT INTO events (event_id, user, item, ts, kind, weight, query, source, ingested_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                fresh,
            )
            new = len(fresh)
            c.execute(
                "INSERT INTO sources VALUES (?, ?, 'ingested', ?, ?, ?, NULL) ON CONFLICT (sha256) DO UPDATE SET "
                "status = 'ingested', rows = excluded.rows, new_rows = excluded.new_rows, at = excluded.at",
                (source, name, len(rows), new, now),
            )
            if offset is not None:
                c.execute("INSERT INTO offsets VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", offset)
        return len(rows), new

    def _digest(self, user: str) -> str:
        row = self._conn.execute("SELECT key FROM forget_key WHERE id = 1").fetchone()
        if row is None:
            with self._tx() as c:
                c.execute("INSERT OR IGNORE INTO forget_key VALUES (1, ?)", (secrets.token_bytes(32),))
            row = self._conn.execute("SELECT key FROM forget_key WHERE id = 1").fetchone()
        return hmac.new(bytes(row[0]), str(user).encode("utf-8"), hashlib.sha256).hexdigest()

    def forgotten_mask(self, events: pd.DataFrame) -> np.ndarray:
        """True for each event of a forgotten customer dated up to their erasure request."""
        cutoffs = dict(self._conn.execute("SELECT digest, before_ts FROM forgotten").fetchall())
        if not cutoffs or events.empty:
            return np.zeros(len(events), dtype=bool)
        ts = pd.to_datetime(events["timestamp"]).to_numpy(dtype="datetime64[s]").astype(np.int64)
        digests = {u: self._digest(u) for u in events["user"].astype(str).unique()}
        before = events["user"].astype(str).map(lambda u: cutoffs.get(digests[u], -(2**62))).to_numpy(dtype=np.int64)
        return ts <= before

    def forget_user(self, user: str) -> int:
        """Erase every event of ``user`` and remember them as forgotten (a keyed digest and the
        request time, so older events of theirs are refused if delivered again; a later event,
        a returning customer's, is ingested). ``bad_rows`` whose reason names them go too. The
        file is then rewritten (``secure_delete``, ``VACUUM``, WAL truncated) so no byte of the
        removed rows remains. Returns the number of events removed."""
        user = str(user)
        digest = self._digest(user)
        self._conn.execute("PRAGMA secure_delete = ON")
        with self._tx() as c:
            latest = c.execute("SELECT coalesce(max(ts), 0) FROM events WHERE user = ?", (user,)).fetchone()[0]
            removed = c.execute("DELETE FROM events WHERE user = ?", (user,)).rowcount
            c.execute("DELETE FROM bad_rows WHERE instr(reason, ?) > 0", (user,))
            c.execute(
                "INSERT INTO forgotten VALUES (?, ?, ?) ON CONFLICT (digest) DO UPDATE SET before_ts = excluded.before_ts, at = excluded.at",
                (digest, max(int(latest), int(time.time())), time.time()),
            )
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._conn.execute("VACUUM")
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(removed)

    def forgotten_count(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM forgotten").fetchone()[0])

    def mark_quarantined(self, source: str, name: str, reason: str) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO sources VALUES (?, ?, 'quarantined', 0, 0, ?, ?) ON CONFLICT (sha256) DO UPDATE SET "
                "status = 'quarantined', at = excluded.at, detail = excluded.detail",
                (source, name, time.time(), reason),
            )

    def add_bad_rows(self, source: str, bad: list[tuple[int, str]], offset: tuple[str, int]) -> None:
        with self._tx() as c:
            c.executemany(
                "INSERT INTO bad_rows (source, position, reason, at) VALUES (?, ?, ?, ?)",
                [(source, pos, reason, time.time()) for pos, reason in bad],
            )
            c.execute("INSERT INTO offsets VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", offset)

    def set_offset(self, key: str, value: int) -> None:
        with self._tx() as c:
            c.execute("INSERT INTO offsets VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, int(value)))

    # ------------------------------------------------------------------ reads
    def offset(self, key: str, default: int = 0) -> int:
        row = self._conn.execute("SELECT value FROM offsets WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else default

    def source_status(self, sha: str) -> str | None:
        row = self._conn.execute("SELECT status FROM sources WHERE sha256 = ?", (sha,)).fetchone()
        return row[0] if row else None

    @property
    def head(self) -> int:
        """The event offset: ``seq`` of the newest event (0 when empty)."""
        return int(self._conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])

    def count(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM events").fetchone()[0])

    def search_count(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM events WHERE kind = ?", (SEARCH_KIND,)).fetchone()[0])

    def counts(self) -> dict[str, int]:
        c = self._conn
        by_status = dict(c.execute("SELECT status, count(*) FROM sources GROUP BY status").fetchall())
        return {
            "events": self.count(),
            "searches": self.search_count(),
            "event_offset": self.head,
            "files_ingested": int(by_status.get("ingested", 0)),
            "files_quarantined": int(by_status.get("quarantined", 0)),
            "bad_rows": int(c.execute("SELECT count(*) FROM bad_rows").fetchone()[0]),
            "customers_forgotten": self.forgotten_count(),
        }

    def users_since(self, seq: int) -> tuple[list[str], int]:
        """Users with interaction events after offset ``seq``, and the offset they are read up to."""
        with self._snapshot() as c:
            head = int(c.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])
            # Interactions only: a customer who has only searched has no history to embed (their queries
            # reach the graph through the prepared training data, with their interactions).
            users = [
                r[0]
                for r in c.execute("SELECT DISTINCT user FROM events WHERE seq > ? AND seq <= ? AND kind != ?", (seq, head, SEARCH_KIND))
            ]
        return users, head

    def histories(self, users: list[str]) -> pd.DataFrame:
        """All interaction events of ``users`` (user, item, ts, kind, weight, seq); no searches."""
        frames = []
        for start in range(0, len(users), 500):
            chunk = users[start : start + 500]
            q = ",".join("?" * len(chunk))
            frames.append(
                pd.read_sql_query(
                    f"SELECT user, item, ts, kind, weight, seq FROM events WHERE kind != ? AND user IN ({q})",
                    self._conn,
                    params=[SEARCH_KIND, *chunk],
                )
            )
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["user", "item", "ts", "kind", "weight", "seq"])

    def latest_ts(self) -> int:
        return int(self._conn.execute("SELECT coalesce(max(ts), 0) FROM events").fetchone()[0])

    def all_events(self, shop: str, upto: int | None = None) -> pd.DataFrame:
        """The interaction events up to offset ``upto`` in the canonical schema (for ShopData)."""
        sql = "SELECT event_id, user, item, ts, kind, weight FROM events WHERE kind != ?" + (" AND seq <= ?" if upto is not None else "")
        df = pd.read_sql_query(sql + " ORDER BY seq", self._conn, params=(SEARCH_KIND, *(() if upto is None else (upto,))))
        out = pd.DataFrame(
            {
                "event_id": df["event_id"].astype("str"),
                "shop": pd.Series([shop] * len(df), dtype="str"),
                "user": df["user"].astype("str"),
                "item": df["item"].astype("str"),
                "timestamp": pd.to_datetime(df["ts"].to_numpy(dtype=np.int64), unit="s").astype("datetime64[s]"),
                "kind": df["kind"].astype("str"),
                "weight": df["weight"].astype("float64"),
            }
        )
        return out

    def all_searches(self, shop: str, upto: int | None = None) -> pd.DataFrame:
        """The search queries up to offset ``upto``, a :data:`~fedgraph.data.schema.SEARCH_COLUMNS` table."""
        sql = "SELECT event_id, user, ts, query FROM events WHERE kind = ?" + (" AND seq <= ?" if upto is not None else "")
        df = pd.read_sql_query(sql + " ORDER BY seq", self._conn, params=(SEARCH_KIND, *(() if upto is None else (upto,))))
        return pd.DataFrame(
            {
                "event_id": df["event_id"].astype("str"),
                "shop": pd.Series([shop] * len(df), dtype="str"),
                "user": df["user"].astype("str"),
                "timestamp": pd.to_datetime(df["ts"].to_numpy(dtype=np.int64), unit="s").astype("datetime64[s]"),
                "query": df["query"].astype("str"),
            }
        )

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN")
        try:
            yield self._conn
        finally:
            self._conn.execute("COMMIT")


# ----------------------------------------------------------------------------- validation


def check_events(frame: pd.DataFrame, *, shop: str, items: set[str], source: str) -> pd.DataFrame:
    """Validate a raw events table for ``shop``; raise :class:`DataValidationError` naming the row.

    Returns the canonical events; a file with search rows (``docs/data.md``, "Searches") gives
    them too, as rows of kind ``search`` with an empty item and a ``query`` column (empty on
    the interactions), which :meth:`EventLog.ingest` stores beside the interactions."""
    frame = frame.copy()
    if "shop" in frame.columns:
        wrong = frame["shop"].astype(str) != shop
        if wrong.any():
            i = int(np.flatnonzero(wrong.to_numpy())[0])
            raise DataValidationError(
                source,
                row=i + 1,
                column="shop",
                expected=f"this shop, '{shop}'",
                found=str(frame["shop"].iloc[i]),
                fix="Drop only this shop's events into its folder (or leave the shop column out).",
            )
    else:
        frame.insert(1, "shop", shop)
    events, searches = validate_event_log(frame, source=source)
    unknown = ~events["item"].isin(items)
    if unknown.any():
        i = int(np.flatnonzero(unknown.to_numpy())[0])
        if len(searches):  # the i-th interaction's row in the file
            i = int(np.flatnonzero((frame["kind"].astype(str) != SEARCH_KIND).to_numpy())[i])
        raise DataValidationError(
            source,
            row=i + 1,
            column="item",
            expected="an item of the shop's catalog",
            found=str(events["item"].iloc[i]),
            fix="Add the item to the catalog (source.catalog) and restart the daemon, or remove the row.",
        )
    if not len(searches):
        return events
    # Searches are stored beside the interactions (kind "search", no item, the text in "query").
    as_rows = searches.assign(item="", kind=SEARCH_KIND, weight=1.0)[[*events.columns, "query"]]
    return pd.concat([events.assign(query=""), as_rows], ignore_index=True)


# ----------------------------------------------------------------------------- drop folder


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _candidate(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and not name.startswith(".") and not name.endswith((".tmp", ".part")) and name.endswith(SUFFIXES)


def _move(path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    n = 1
    while target.exists():
        target = folder / f"{path.name}.{n}"
        n += 1
    os.replace(path, target)
    return target


class DropFolder:
    """Ingest ``folder``'s files into an :class:`EventLog` (see module docs)."""

    def __init__(
        self,
        folder: Path,
        events: EventLog,
        *,
        shop: str,
        items: set[str],
        log: EventLogger,
        settle_s: float = 0.5,
        processed: Path | None = None,
        quarantine: Path | None = None,
    ):
        self.folder = Path(folder)
        self.events = events
        self.shop = shop
        self.items = items
        self.log = log
        self.settle_s = float(settle_s)
        self.processed = processed or self.folder / "processed"
        self.quarantine = quarantine or self.folder / "quarantine"
        self._seen: dict[Path, tuple[int, int, float]] = {}

    def _settled(self, path: Path, st: os.stat_result) -> bool:
        if self.settle_s <= 0:
            return True
        now = time.time()
        if now - st.st_mtime >= self.settle_s:
            return True
        key = (st.st_size, st.st_mtime_ns)
        first = self._seen.get(path)
        if first is None or first[:2] != key:
            self._seen[path] = (*key, now)
            return False
        return now - first[2] >= self.settle_s

    def poll(self) -> IngestReport:
        report = IngestReport()
        self.folder.mkdir(parents=True, exist_ok=True)
        files = []
        for path in self.folder.iterdir():
            if not _candidate(path):
                continue
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if self._settled(path, st):
                files.append((st.st_mtime_ns, path.name, path))
        for _, _, path in sorted(files):
            self._seen.pop(path, None)
            self._one(path, report)
        return report

    def _one(self, path: Path, report: IngestReport) -> None:
        sha = file_sha256(path)
        status = self.events.source_status(sha)
        if status == "ingested":  # e.g. a crash between the commit and the move, or a re-drop
            moved = self._archive(path, self._refused_ids(path))
            self.log.info(
                "file_already_ingested", f"{path.name}: already ingested (same bytes); moved to {moved}", file=path.name, sha256=sha
            )
            return
        try:
            raw = read_table(path, path.name, "events")
            events = check_events(raw, shop=self.shop, items=self.items, source=path.name)
        except DataValidationError as exc:
            self._quarantine(path, sha, str(exc))
            report.quarantined += 1
            return
        refused = set(events.loc[self.events.forgotten_mask(events), "event_id"].astype(str))
        rows, new = self.events.ingest(events, source=sha, name=path.name)
        moved = self._archive(path, refused, raw)
        report.files += 1
        report.rows += rows
        report.new_events += new
        report.duplicates += rows - new
        self.log.info(
            "file_ingested",
            f"{path.name}: {rows} rows, {new} new events ({rows - new} already ingested); moved to {moved.parent.name}/",
            file=path.name,
            rows=rows,
            new_events=new,
            duplicates=rows - new,
            event_offset=self.events.head,
        )

    def _refused_ids(self, path: Path) -> set[str]:
        """Event ids in ``path`` of forgotten customers (none when nobody was forgotten)."""
        if not self.events.forgotten_count():
            return set()
        try:
            events = check_events(read_table(path, path.name, "events"), shop=self.shop, items=self.items, source=path.name)
        except DataValidationError:
            return set()
        return set(events.loc[self.events.forgotten_mask(events), "event_id"].astype(str))

    def _archive(self, path: Path, refused: set[str], raw: pd.DataFrame | None = None) -> Path:
        """Move ``path`` to ``processed/``; with ``refused`` event ids (a forgotten customer's),
        the archived copy is written without those rows, so ``processed/`` never keeps them."""
        if not refused:
            return _move(path, self.processed)
        raw = read_table(path, path.name, "events") if raw is None else raw
        rest = raw[~raw["event_id"].astype(str).isin(refused)]
        self.processed.mkdir(parents=True, exist_ok=True)
        target = self.processed / path.name
        n = 1
        while target.exists():
            target = self.processed / f"{path.name}.{n}"
            n += 1
        write_table(rest, target, like=path)
        path.unlink()
        self.log.info(
            "forgotten_rows_refused",
            f"{path.name}: {len(refused)} rows of forgotten customers refused and left out of processed/",
            file=path.name,
            rows=len(refused),
        )
        return target

    def _quarantine(self, path: Path, sha: str, reason: str) -> None:
        moved = _move(path, self.quarantine)
        (moved.parent / f"{moved.name}.reason.txt").write_text(reason + "\n", encoding="utf-8")
        self.events.mark_quarantined(sha, path.name, reason)
        self.log.error(
            "file_quarantined",
            f"{path.name}: not ingested, moved to {moved}: {reason} -- fix the file and drop it into {self.folder} again "
            f"(events already ingested are never counted twice)",
            file=path.name,
            quarantined_as=str(moved),
            reason=reason,
            sha256=sha,
        )


# ----------------------------------------------------------------------------- SQLite table


class SqliteTable:
    """Ingest new rows of an SQLite table, in ``rowid`` order, from the last committed position."""

    OFFSET_KEY = "sqlite_rowid"

    def __init__(
        self, database: Path, table: str, events: EventLog, *, shop: str, items: set[str], log: EventLogger, batch_rows: int = 5000
    ):
        if not table.replace("_", "").isalnum():
            raise ValueError(f"source.table must be a plain table name, got {table!r}")
        self.database = Path(database)
        self.table = table
        self.events = events
        self.shop = shop
        self.items = items
        self.log = log
        self.batch_rows = int(batch_rows)

    def poll(self) -> IngestReport:
        report = IngestReport()
        if not self.database.exists():
            return report
        conn = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=30.0)
        try:
            while True:
                last = self.events.offset(self.OFFSET_KEY)
                try:
                    cur = conn.execute(f"SELECT rowid, * FROM {self.table} WHERE rowid > ? ORDER BY rowid LIMIT ?", (last, self.batch_rows))
                except sqlite3.OperationalError as exc:
                    self.log.error(
                        "source_unreadable",
                        f"cannot read table {self.table!r} of {self.database}: {exc}; check source.path and source.table",
                        database=str(self.database),
                        table=self.table,
                    )
                    return report
                columns = [d[0] for d in cur.description]
                rows = cur.fetchall()
                if not rows:
                    return report
                raw = pd.DataFrame(rows, columns=columns)
                frame = raw.astype(str)
                for column in ("item", "weight", "query"):  # empty on a search row: NULL is "", not "None"
                    if column in raw.columns:
                        frame[column] = raw[column].where(raw[column].notna(), "").astype(str)
                rowids = frame.pop(columns[0]).astype(int).to_numpy()
                frame = frame[
                    [c for c in frame.columns if c in ("event_id", "shop", "user", "item", "timestamp", "kind", "weight", "query")]
                ]
                name = f"{self.database.name}:{self.table}"
                source = f"sqlite:{self.database}:{self.table}:{rowids[0]}-{rowids[-1]}"
                offset = (self.OFFSET_KEY, int(rowids[-1]))
                try:
                    events = check_events(frame, shop=self.shop, items=self.items, source=name)
                except DataValidationError:
                    events, bad = self._row_by_row(frame, rowids, name)
                    for pos, reason in bad:
                        self.log.error("row_rejected", f"{name} rowid {pos}: {reason}", table=self.table, rowid=pos, reason=reason)
                    if events is None:  # nothing good in the batch: record the rejects and move on
                        self.events.add_bad_rows(name, bad, offset)
                        continue
                    self.events.add_bad_rows(name, bad, (self.OFFSET_KEY, last))
                n, new = self.events.ingest(events, source=source, name=name, offset=offset)
                report.files += 1
                report.rows += n
                report.new_events += new
                report.duplicates += n - new
                self.log.info(
                    "rows_ingested",
                    f"{name}: rowid {rowids[0]}..{rowids[-1]}: {n} rows, {new} new events",
                    rows=n,
                    new_events=new,
                    rowid=int(rowids[-1]),
                    event_offset=self.events.head,
                )
        finally:
            conn.close()

    def _row_by_row(self, frame: pd.DataFrame, rowids: np.ndarray, name: str) -> tuple[pd.DataFrame | None, list[tuple[int, str]]]:
        good, bad = [], []
        for i in range(len(frame)):
            try:
                good.append(check_events(frame.iloc[i : i + 1].reset_index(drop=True), shop=self.shop, items=self.items, source=name))
            except DataValidationError as exc:
                bad.append((int(rowids[i]), str(exc)))
        return (pd.concat(good, ignore_index=True) if good else None), bad

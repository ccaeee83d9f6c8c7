"""Erasing one customer from files (the right to erasure), shared by simulations and shop daemons.

:func:`forget_in_run` erases a customer from a simulation's run directory;
:func:`fedgraph.deploy.forget.forget_customer` from a shop daemon's state. Both end with
:func:`files_naming`, a search of every file for the id, so whatever still names the customer is
reported by path instead of being silently kept.

What erasure cannot undo: models already trained with the customer's data (the global model's
checkpoints, the shop-private parts) and aggregates derived from it (the federation's item
co-occurrence counts, baseline and metric files). With ``privacy.enabled`` their dependence on
any one customer is bounded by the DP guarantee (ε, δ per shop, user-level); without DP it is
not bounded at all. PRIVACY.md, "Forgetting a customer", says the same to a compliance reader.
"""

from __future__ import annotations

import gzip
import json
import re
import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedgraph.atomic import atomic_write_text
from fedgraph.data.loaders import write_table

#: What an erased id is replaced by in text files (logs, status).
REDACTED = "<forgotten>"
TEXT_SUFFIXES = (".json", ".jsonl", ".log", ".txt", ".toml", ".md")
#: Files of a simulation run derived from every customer's data, which erasure does not recompute.
NOT_UNDONE = "models already trained (checkpoints, shop-private parts) and aggregates (federated counts, baseline and metric files)"


class ForgetError(RuntimeError):
    """The request cannot be carried out (bad id, missing state)."""


@dataclass
class ForgetReport:
    """What one erasure removed. ``left`` names files that still contain the id (should be
    empty; the caller must act on any that are listed)."""

    request: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    events: int = 0
    graph_rows: int = 0
    training_data: str = "not built yet"
    drop_files_rewritten: list[str] = field(default_factory=list)
    drop_files_pending: list[str] = field(default_factory=list)
    text_files_redacted: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _token(user: str) -> re.Pattern[bytes]:
    """The id as a whole token (not a piece of a longer id or number)."""
    return re.compile(rb"(?<![A-Za-z0-9_\-.])" + re.escape(user.encode("utf-8")) + rb"(?![A-Za-z0-9_\-])")


_DROP_NAME = re.compile(r"(.+\.(?:csv|csv\.gz|parquet))(?:\.\d+)?$")


def _format_name(path: Path) -> str | None:
    """The name whose extension gives ``path``'s table format: ``a.csv`` for ``a.csv`` and for
    ``a.csv.1`` (the name ``processed/`` gives a second file called ``a.csv``); None otherwise."""
    match = _DROP_NAME.fullmatch(path.name)
    return match.group(1) if match else None


def is_drop_file(path: Path) -> bool:
    return _format_name(path) is not None


def _read_drop_file(path: Path) -> pd.DataFrame:
    name = _format_name(path) or path.name
    if name.endswith(".parquet"):
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype=str, keep_default_na=False, compression="gzip" if name.endswith(".gz") else None)


def rewrite_without(path: Path, user: str) -> bool:
    """Rewrite a drop file without ``user``'s rows (removed when nothing is left); False if it
    has none of them. Raises on a file that cannot be parsed."""
    frame = _read_drop_file(path)
    if "user" not in frame.columns:
        return False
    mine = frame["user"].astype(str) == user
    if not mine.any():
        return False
    rest = frame[~mine]
    if rest.empty:
        path.unlink()
        return True
    write_table(rest, path, like=path.with_name(_format_name(path) or path.name))
    return True


def _redact_strings(value: Any, pattern: re.Pattern[str]) -> Any:
    """``value`` (parsed JSON) with the id replaced inside every string and key; numbers, which
    an id like ``12`` would otherwise hit, are left alone."""
    if isinstance(value, str):
        return pattern.sub(REDACTED, value)
    if isinstance(value, list):
        return [_redact_strings(v, pattern) for v in value]
    if isinstance(value, dict):
        return {pattern.sub(REDACTED, k): _redact_strings(v, pattern) for k, v in value.items()}
    return value


def redact_text(path: Path, user: str) -> bool:
    """Replace ``user``'s id by :data:`REDACTED` in a text file, atomically: inside JSON strings
    for ``.json``/``.jsonl`` (each line parsed), as a whole token elsewhere. False: no change."""
    raw = path.read_bytes()
    token = _token(user)
    if not token.search(raw):
        return False
    pattern = re.compile(token.pattern.decode("utf-8"))
    text = raw.decode("utf-8", "replace")
    try:
        if path.suffix == ".json":
            redacted = json.dumps(_redact_strings(json.loads(text), pattern), indent=2) + "\n"
        elif path.suffix == ".jsonl":
            lines = [
                json.dumps(_redact_strings(json.loads(line), pattern), ensure_ascii=False) if line.strip() else line
                for line in text.split("\n")
            ]
            redacted = "\n".join(lines)
        else:
            redacted = pattern.sub(REDACTED, text)
    except ValueError:  # not valid JSON after all: treat it as text
        redacted = pattern.sub(REDACTED, text)
    if redacted == text:
        return False
    atomic_write_text(path, redacted)
    return True


def _sqlite_names(path: Path, user: str, shop: str | None) -> bool:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            columns = [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')]
            scope, args = (' AND "shop" = ?', (shop,)) if shop is not None and "shop" in columns else ("", ())
            for column in columns:
                sql = f'SELECT 1 FROM "{table}" WHERE CAST("{column}" AS TEXT) = ?{scope} LIMIT 1'
                if conn.execute(sql, (user, *args)).fetchone():
                    return True
        return False
    finally:
        conn.close()


def _npz_names(path: Path, user: str, shop: str | None) -> bool:
    with np.load(path, allow_pickle=False) as archive:
        if shop is not None and "shop" in archive.files and str(archive["shop"]) != shop:
            return False  # another shop's data: the same id there is another customer
        for name in archive.files:
            values = archive[name]
            if values.dtype.kind in "US" and (values.astype(str) == user).any():
                return True
            if values.dtype.kind in "US" and values.ndim == 0 and _token(user).search(str(values).encode()):
                return True
    return False


def names_customer(path: Path, user: str, shop: str | None = None) -> bool:
    """Whether ``path`` still holds ``user``'s id: by value in SQLite tables, ``.npz`` string
    arrays and drop files (parsed, gzip undone), as a token in any other file's bytes.

    ``shop``: where several shops share a file (a simulation's ``graph.sqlite``), only that
    shop's rows and data files count, since the same id in another shop is another customer;
    ``None`` (a shop daemon's own state) also searches SQLite files byte by byte."""
    user = str(user)
    try:
        if path.name.endswith((".sqlite-wal", ".sqlite-shm", ".lock", ".db-shm")):
            return path.stat().st_size > 0 and path.name.endswith("-wal") and bool(_token(user).search(path.read_bytes()))
        with open(path, "rb") as handle:
            head = handle.read(16)
        if head == b"SQLite format 3\x00":
            return _sqlite_names(path, user, shop) or (shop is None and bool(_token(user).search(path.read_bytes())))
        if path.suffix == ".npz":
            return _npz_names(path, user, shop)
        if is_drop_file(path):
            frame = _read_drop_file(path)
            return bool("user" in frame.columns and (frame["user"].astype(str) == user).any())
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        return bool(_token(user).search(data))
    except Exception:  # noqa: BLE001 - an unreadable file is checked byte by byte
        return bool(_token(user).search(path.read_bytes()))


def files_naming(roots: Iterable[Path], user: str, shop: str | None = None) -> list[Path]:
    """Every file under ``roots`` that still holds ``user``'s id (:func:`names_customer`)."""
    return [path for path in all_files(roots) if names_customer(path, user, shop)]


def all_files(roots: Iterable[Path]) -> Iterator[Path]:
    seen: set[Path] = set()
    for root in roots:
        if not root.exists():
            continue
        for path in sorted(root.rglob("*")) if root.is_dir() else [root]:
            if path.is_file() and not path.is_symlink() and path not in seen:
                seen.add(path)
                yield path


def check_user(user: str) -> str:
    user = str(user)
    if not user.strip() or user != user.strip() or "\n" in user:
        raise ForgetError(f"customer id {user!r} is empty or has surrounding spaces; give the id exactly as it appears in the events")
    return user


def forget_in_run(run_dir: str | Path, shop: str, user: str) -> ForgetReport:
    """Erase ``user`` of ``shop`` from a simulation's run directory: their rows in the shop's
    data files (``shops/<shop>.npz`` and ``.final.npz``, so a resumed run never trains on them
    again), their graph node and edges, and their id in the run's text files; then every file is
    searched (``left``). Models and aggregates already computed are not undone (module docs).

    Raises:
        ForgetError: an empty id, or ``shop`` is not a shop of the run.
    """
    from fedgraph.federation.run_dir import RunDir
    from fedgraph.graph.stores import open_store
    from fedgraph.shop import ShopData

    user = check_user(user)
    run = RunDir.at(run_dir)
    if shop not in run.shop_names:
        raise ForgetError(f"shop {shop!r} is not in the run {run.path} (its shops: {', '.join(run.shop_names)})")
    report = ForgetReport()
    for path in (run.shop_file(shop), run.final_shop_file(shop)):
        if path.exists():
            data = ShopData.load(path)
            if user in set(data.users.tolist()):
                kept = data.without_user(user)
                report.events += data.num_interactions + len(data.test_item) - kept.num_interactions - len(kept.test_item)
                kept.save(path)
                report.training_data = "rows removed from the shop's data files"
    graph = run.path / "graph.sqlite"
    if graph.exists():
        store = open_store(run.config, run.path, create=False)
        try:
            report.graph_rows = store.forget_user(shop, user)
        finally:
            store.close()
    for path in all_files([run.path]):
        if path.suffix in TEXT_SUFFIXES and redact_text(path, user):
            report.text_files_redacted.append(str(path))
    report.left = [str(p) for p in files_naming([run.path], user, shop)]
    return report

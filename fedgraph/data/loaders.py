"""Read and validate events and catalog tables (``.csv``, ``.csv.gz``, ``.parquet``).

Every problem is reported as a :class:`DataValidationError` that names the file, the
1-based data row (row 1 is the first line after a CSV header; for an in-memory frame, its
first row), the column, what was expected and what was found, and says how to fix it::

    events.csv, row 17, column 'timestamp': expected a timestamp like 2011-03-01 12:30:00,
    found 'yesterday'. Fix or remove that row.

Validation stops at the first problem: checks run in a fixed order (file, columns, then the
columns one by one in schema order, then uniqueness) and each reports its first bad row.
Loaders only read; they never write anything.
"""

from __future__ import annotations

import os
import re
import warnings
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from .schema import (
    CATALOG_COLUMNS,
    EVENT_COLUMNS,
    EVENT_KINDS,
    QUERY_COLUMN,
    SEARCH_COLUMNS,
    SEARCH_KIND,
    STRING_DTYPE,
    TIMESTAMP_DTYPE,
)

PathLike = str | os.PathLike

SUPPORTED_EXTENSIONS = (".csv", ".csv.gz", ".parquet")

_FIX_ROW = "Fix or remove that row."
_TZ_SUFFIX = re.compile(r"(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$")


class DataValidationError(ValueError):
    """A data file or frame does not follow the fedgraph schema.

    Attributes: ``file`` (file or source name), ``row`` (1-based data row, or None when the
    problem is not about one row), ``rows`` (all rows involved, e.g. both rows of a
    duplicate; ``(row,)`` or ``()`` otherwise), ``column`` (or None), ``expected`` (text),
    ``found`` (the offending value, list of names, or text) and ``fix`` (what to do).
    """

    def __init__(
        self,
        file: str,
        *,
        expected: str,
        found: Any,
        row: int | None = None,
        rows: Sequence[int] = (),
        column: str | None = None,
        fix: str = _FIX_ROW,
    ) -> None:
        self.file = str(file)
        self.row = None if row is None else int(row)
        rows = tuple(int(r) for r in rows)
        self.rows = rows if rows else ((self.row,) if self.row is not None else ())
        self.column = column
        self.expected = expected
        self.found = found
        self.fix = fix
        super().__init__(self._message())

    def _message(self) -> str:
        where = self.file
        if len(self.rows) > 1:
            where += ", rows " + " and ".join(str(r) for r in self.rows)
        elif self.row is not None:
            where += f", row {self.row}"
        if self.column is not None:
            where += f", column '{self.column}'"
        return f"{where}: expected {self.expected}, found {_show(self.found)}. {self.fix}"

    def __reduce__(self):  # keep the keyword-only constructor picklable (Ray / multiprocessing)
        kwargs = dict(
            expected=self.expected,
            found=self.found,
            row=self.row,
            rows=self.rows,
            column=self.column,
            fix=self.fix,
        )
        return (_rebuild_error, (type(self), self.file, kwargs))


class DataFileNotFoundError(DataValidationError, FileNotFoundError):
    """The data file does not exist (also a :class:`FileNotFoundError`)."""


def _rebuild_error(cls, file, kwargs):
    return cls(file, **kwargs)


class _Text(str):
    """A found-value that is already prose: shown without quotes."""


def _show(value: Any) -> str:
    if isinstance(value, _Text):
        return str(value)
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(_show(v) for v in value) if value else "none"
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return "an empty value"
    return repr(value)


# --------------------------------------------------------------------------------------
# reading files


def load_events(path: PathLike, *, source_name: str | None = None) -> pd.DataFrame:
    """Read an events table and return it validated, in canonical column order and dtypes.

    ``source_name`` is the name used in error messages (default: the file name).
    """
    name = source_name or Path(path).name
    return validate_events(read_table(path, name, "events"), source=name)


def load_event_log(path: PathLike, *, source_name: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read an events file that may hold search rows: ``(events, searches)``, both validated
    (:func:`validate_event_log`)."""
    name = source_name or Path(path).name
    return validate_event_log(read_table(path, name, "events"), source=name)


def load_catalog(path: PathLike, *, source_name: str | None = None) -> pd.DataFrame:
    """Read a catalog table and return it validated, in canonical column order and dtypes."""
    name = source_name or Path(path).name
    return validate_catalog(read_table(path, name, "catalog"), source=name)


def _extension(path: Path) -> str:
    lower = path.name.lower()
    for ext in (".csv.gz", ".csv", ".parquet"):
        if lower.endswith(ext):
            return ext
    return "".join(path.suffixes[-2:]) if path.suffixes else ""


def write_table(frame: pd.DataFrame, path: PathLike, *, like: PathLike | None = None) -> Path:
    """Write ``frame`` in the format ``path``'s name says (or ``like``'s: .csv, .csv.gz or
    .parquet), atomically: the inverse of :func:`read_table`, for rewriting a shop's own files
    (e.g. without a forgotten customer's rows)."""
    from fedgraph.atomic import atomic_path

    path = Path(path)
    ext = _extension(Path(like) if like is not None else path)
    if ext not in SUPPORTED_EXTENSIONS:
        raise ValueError(f"{path}: cannot write a table ending in {ext or 'no extension'}; use .csv, .csv.gz or .parquet")
    with atomic_path(path) as tmp:
        if ext == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False, compression="gzip" if ext == ".csv.gz" else None)
    return path


def read_table(path: PathLike, name: str, what: str) -> pd.DataFrame:
    """The raw rows of a .csv, .csv.gz or .parquet file, not yet validated (``name`` is the file's
    name in error messages, ``what`` "events" or "catalog").

    Raises:
        DataFileNotFoundError: no file at ``path``.
        DataValidationError: an unsupported extension, a directory, or an unreadable file.
    """
    path = Path(path)
    ext = _extension(path)
    if ext not in SUPPORTED_EXTENSIONS:
        raise DataValidationError(
            name,
            expected=f"{_an(what)} file ending in .csv, .csv.gz or .parquet",
            found=_Text(f"extension '{ext}'" if ext else "no extension"),
            fix="Convert the file to CSV or Parquet, or rename it if it already is one.",
        )
    if not path.exists():
        raise DataFileNotFoundError(
            name,
            expected=f"an existing {what} file",
            found=_Text(f"no file at {path}"),
            fix="Check the path.",
        )
    if not path.is_file():
        raise DataValidationError(
            name,
            expected=f"{_an(what)} file",
            found=_Text(f"a directory at {path}"),
            fix="Pass the path of the file itself.",
        )
    try:
        if ext == ".parquet":
            frame = pd.read_parquet(path)
        else:
            # All columns as strings: ids keep leading zeros ("007"), nothing becomes NaN.
            with warnings.catch_warnings():
                # pandas only warns when the first data row has more fields than the header.
                warnings.simplefilter("error", pd.errors.ParserWarning)
                frame = pd.read_csv(
                    path,
                    dtype=str,
                    keep_default_na=False,
                    na_filter=False,
                    index_col=False,
                    encoding="utf-8-sig",
                    compression="gzip" if ext == ".csv.gz" else None,
                )
    except pd.errors.EmptyDataError:
        raise DataValidationError(
            name,
            expected="a header line and at least one data row",
            found=_Text("an empty file"),
            fix=f"Write the header ({', '.join(_columns_for(what))}) and the {what} rows.",
        ) from None
    except pd.errors.ParserWarning:
        raise DataValidationError(
            name,
            row=1,
            expected="as many fields as the header has columns",
            found=_Text("more fields"),
            fix="Remove the extra fields or quote fields that contain commas.",
        ) from None
    except pd.errors.ParserError as exc:
        text = " ".join(str(exc).split())
        line = re.search(r"line (\d+), saw (\d+)", text)
        if line:
            raise DataValidationError(
                name,
                row=int(line.group(1)) - 1,
                expected="as many fields as the header has columns",
                found=_Text(f"{line.group(2)} fields"),
                fix="Remove the extra fields or quote fields that contain commas.",
            ) from None
        raise DataValidationError(
            name,
            expected="a well-formed CSV file",
            found=_Text(f"a parse error ({text})"),
            fix="Fix the CSV syntax (for example an unclosed quote).",
        ) from None
    except UnicodeDecodeError as exc:
        raise DataValidationError(
            name,
            expected="UTF-8 text",
            found=_Text(f"undecodable bytes at byte {exc.start}"),
            fix="Re-save the file as UTF-8.",
        ) from None
    except (OSError, ValueError, ImportError, EOFError, zlib.error) as exc:  # EOFError: a truncated .gz
        raise DataValidationError(
            name,
            expected=f"a readable {ext} {what} file",
            found=_Text(f"an unreadable file ({type(exc).__name__}: {exc})"),
            fix="Check that the file is complete and of the type its extension says.",
        ) from None
    return frame


def _an(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _columns_for(what: str) -> list[str]:
    return EVENT_COLUMNS if what == "events" else CATALOG_COLUMNS


# --------------------------------------------------------------------------------------
# validation


def validate_events(df: pd.DataFrame, source: str = "events") -> pd.DataFrame:
    """Check ``df`` against the events schema; return a canonical copy of its interactions.

    The result has exactly :data:`EVENT_COLUMNS` in order, string ids, ``datetime64[s]``
    timestamps (sub-second parts are floored) and float64 weights, with a fresh RangeIndex.
    Search rows (kind ``search``, with a ``query`` column) are checked too and left out:
    :func:`validate_event_log` returns them. Raises :class:`DataValidationError` on the first
    problem found.
    """
    return validate_event_log(df, source)[0]


def validate_event_log(df: pd.DataFrame, source: str = "events") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check an events table that may hold logged searches; return ``(events, searches)``.

    ``events`` is what :func:`validate_events` returns; ``searches`` has :data:`SEARCH_COLUMNS`
    (:mod:`fedgraph.data.schema`): the rows of kind ``search``, whose ``item`` must be empty
    and whose ``query`` must not be (a missing ``weight`` is allowed there). Rows are numbered
    as in ``df``, searches included. Without a ``query`` column there are no searches and a
    ``search`` row is an error that says to add the column.
    """
    df = _check_frame(df, source, EVENT_COLUMNS, "events", optional=(QUERY_COLUMN,))
    has_query = QUERY_COLUMN in df.columns
    out = {}
    for col in ("event_id", "shop", "user"):
        out[col] = _ids(df[col], source, col)
    kind = _strings(df["kind"])
    allowed = EVENT_KINDS + ((SEARCH_KIND,) if has_query else ())
    bad = ~kind.isin(allowed)
    if bad.any():
        i = _first(bad)
        raise DataValidationError(
            source,
            row=i + 1,
            column="kind",
            expected="one of " + ", ".join(f"'{k}'" for k in allowed),
            found=_value(kind, i),
            fix=(
                "A search row needs a 'query' column with its text (see the events schema); otherwise fix or remove that row."
                if _value(kind, i) == SEARCH_KIND
                else _FIX_ROW
            ),
        )
    search = (kind == SEARCH_KIND).to_numpy(dtype=bool)
    item = _strings(df["item"])
    no_item = (item.isna() | (item.str.strip() == "")).to_numpy(dtype=bool)
    for wrong, expected in (
        (no_item & ~search, "a non-empty item" + (" (only a 'search' row has none)" if has_query else "")),
        (~no_item & search, "an empty item on a 'search' row (the query text goes in the 'query' column)"),
    ):
        if wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            raise DataValidationError(source, row=i + 1, column="item", expected=expected, found=_value(item, i))
    out["item"] = item
    out["timestamp"] = _timestamps(df["timestamp"], source)
    out["kind"] = kind
    weight = df["weight"].reset_index(drop=True)
    if search.any():  # a search has no quantity: an empty weight is 1
        missing = (weight.isna() | (weight.astype(object).astype(str).str.strip() == "")).to_numpy(dtype=bool)
        weight = weight.astype(object).where(~(search & missing), 1.0)
    out["weight"] = _numbers(weight, source, "weight", strictly_positive=True)
    if has_query:
        query = _strings(df[QUERY_COLUMN]).fillna("").str.strip()
        for wrong, expected in (
            (search & (query == "").to_numpy(dtype=bool), "the query text on a 'search' row"),
            (~search & (query != "").to_numpy(dtype=bool), "an empty query (only a 'search' row has one)"),
        ):
            if wrong.any():
                i = int(np.flatnonzero(wrong)[0])
                raise DataValidationError(source, row=i + 1, column=QUERY_COLUMN, expected=expected, found=_value(query, i) or None)
        out[QUERY_COLUMN] = query
    _check_unique(out["event_id"], source, "event_id")
    full = _assemble(out, [*EVENT_COLUMNS, *([QUERY_COLUMN] if has_query else [])])
    events = full.loc[~search, EVENT_COLUMNS].reset_index(drop=True)
    if has_query:
        searches = full.loc[search, SEARCH_COLUMNS].reset_index(drop=True)
    else:
        from .schema import empty_searches

        searches = empty_searches()
    return events, searches


def validate_catalog(df: pd.DataFrame, source: str = "catalog") -> pd.DataFrame:
    """Check ``df`` against the catalog schema; return a canonical copy.

    ``description`` may be empty (a missing value becomes ""); every other text column must
    be non-empty; price must be a finite number >= 0; (shop, item) must be unique.
    """
    df = _check_frame(df, source, CATALOG_COLUMNS, "catalog")
    out = {}
    for col in ("shop", "item"):
        out[col] = _ids(df[col], source, col)
    out["title"] = _ids(df["title"], source, "title", what="a non-empty title")
    out["description"] = _strings(df["description"]).fillna("")
    out["category"] = _ids(df["category"], source, "category", what="a non-empty category")
    out["price"] = _numbers(df["price"], source, "price", strictly_positive=False)
    (key,) = _pair_keys((out["shop"], out["item"]))
    dup = pd.Series(key).duplicated(keep="first")
    if dup.any():
        j = _first(dup)
        i = _first(key == key[j])
        raise DataValidationError(
            source,
            rows=(i + 1, j + 1),
            row=j + 1,
            column="item",
            expected="each (shop, item) pair at most once",
            found=_Text(f"shop '{out['shop'].iloc[j]}', item '{out['item'].iloc[j]}' twice"),
            fix="Merge the two rows or remove one of them.",
        )
    return _assemble(out, CATALOG_COLUMNS)


def check_events_against_catalog(
    events: pd.DataFrame,
    catalog: pd.DataFrame,
    source: str = "events",
    *,
    catalog_source: str = "catalog",
) -> None:
    """Check that the two (already validated) tables fit together.

    Every (shop, item) of ``events`` must be listed in ``catalog``, and every shop of the
    catalog must have at least one event (otherwise it is an "empty shop").
    """
    cat_shops = pd.Index(catalog["shop"].unique())
    ev_shops = events["shop"]
    unknown_shop = ~ev_shops.isin(cat_shops)
    if unknown_shop.any():
        i = _first(unknown_shop)
        raise DataValidationError(
            source,
            row=i + 1,
            column="shop",
            expected=f"a shop that has items in {catalog_source}",
            found=_value(ev_shops, i),
            fix=f"Add that shop's items to {catalog_source} or remove its events.",
        )
    ev_key, cat_key = _pair_keys((ev_shops, events["item"]), (catalog["shop"], catalog["item"]))
    missing = ~np.isin(ev_key, cat_key)
    if missing.any():
        i = _first(missing)
        raise DataValidationError(
            source,
            row=i + 1,
            column="item",
            expected=f"an item listed in {catalog_source} for shop '{ev_shops.iloc[i]}'",
            found=_value(events["item"], i),
            fix=f"Add the item to {catalog_source} or remove that row.",
        )
    empty = ~catalog["shop"].isin(pd.Index(ev_shops.unique()))
    if empty.any():
        i = _first(empty)
        shop = catalog["shop"].iloc[i]
        n_empty = catalog.loc[empty, "shop"].nunique()
        raise DataValidationError(
            catalog_source,
            row=i + 1,
            column="shop",
            expected=f"every catalog shop to have at least one event in {source}",
            found=_Text(f"shop '{shop}' with no events (empty shop" + (f"; {n_empty - 1} more empty shop(s)" if n_empty > 1 else "") + ")"),
            fix="Add events for that shop or remove its items from the catalog.",
        )


# --------------------------------------------------------------------------------------
# helpers


def _check_frame(df: Any, source: str, columns: list[str], what: str, optional: Sequence[str] = ()) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{source}: expected a pandas DataFrame, got {type(df).__name__}")
    present = [str(c) for c in df.columns]
    missing = [c for c in columns if c not in present]
    unknown = [c for c in present if c not in columns and c not in optional]
    expected_list = ", ".join(columns) + (f" (and optionally {', '.join(optional)})" if optional else "")
    if missing:
        extra = f" and unknown column(s) {_show(unknown)}" if unknown else ""
        raise DataValidationError(
            source,
            expected=f"the {what} columns {expected_list}",
            found=_Text(f"missing column(s) {_show(missing)}{extra}"),
            fix="Add the missing column(s)" + (" or rename the unknown ones" if unknown else "") + ".",
        )
    if unknown:
        raise DataValidationError(
            source,
            expected=f"only the {what} columns {expected_list}",
            found=_Text(f"unknown column(s) {_show(unknown)}"),
            fix="Remove or rename those columns.",
        )
    if len(present) != len(set(present)):
        dups = sorted({c for c in present if present.count(c) > 1})
        raise DataValidationError(
            source,
            expected="each column once",
            found=_Text(f"duplicated column(s) {_show(dups)}"),
            fix="Remove the duplicates.",
        )
    if len(df) == 0:
        raise DataValidationError(
            source,
            expected="at least one data row",
            found=_Text("no data rows"),
            fix=f"Add {what} rows, or check that you passed the right file.",
        )
    df = df.copy(deep=False)
    df.columns = present
    return df


def _pair_keys(*pairs: tuple[pd.Series, pd.Series]) -> list[np.ndarray]:
    """One int64 key per (shop, item) row, comparable across all the given pairs."""
    shops, shop_uniques = pd.factorize(pd.concat([p[0] for p in pairs], ignore_index=True))
    items, item_uniques = pd.factorize(pd.concat([p[1] for p in pairs], ignore_index=True))
    key = shops.astype(np.int64) * max(len(item_uniques), 1) + items
    out, start = [], 0
    for shop, _ in pairs:
        out.append(key[start : start + len(shop)])
        start += len(shop)
    return out


def _first(mask: pd.Series) -> int:
    return int(np.flatnonzero(np.asarray(mask, dtype=bool))[0])


def _value(series: pd.Series, i: int) -> Any:
    v = series.iloc[i]
    if isinstance(v, (np.generic,)):
        v = v.item()
    return v


def _strings(s: pd.Series) -> pd.Series:
    """Convert a column to the str dtype; missing values stay NaN."""
    if ptypes.is_float_dtype(s.dtype):
        finite = s.notna() & np.isfinite(s.to_numpy(dtype="float64", na_value=np.nan))
        if finite.all() and (s == np.floor(s)).all():
            s = s.astype("Int64")
    if ptypes.is_bool_dtype(s.dtype):
        s = s.astype(object)
    out = s.astype(STRING_DTYPE)
    return out.reset_index(drop=True)


def _ids(s: pd.Series, source: str, column: str, what: str | None = None) -> pd.Series:
    out = _strings(s)
    empty = out.isna() | (out.str.strip() == "")
    if empty.any():
        i = _first(empty)
        raw = s.iloc[i]
        raise DataValidationError(
            source,
            row=i + 1,
            column=column,
            expected=what or f"a non-empty {column}",
            found=raw if isinstance(raw, str) else None,
        )
    return out


def _numbers(s: pd.Series, source: str, column: str, *, strictly_positive: bool) -> pd.Series:
    s = s.reset_index(drop=True)
    if ptypes.is_bool_dtype(s.dtype):
        s = s.astype(object).astype(STRING_DTYPE)
    if ptypes.is_numeric_dtype(s.dtype):
        values = s.astype("float64")
    else:
        text = _strings(s)
        values = pd.to_numeric(text, errors="coerce").astype("float64")
        said_nan = text.str.strip().str.lower().isin(["nan", "+nan", "-nan"])
        bad = values.isna() & ~said_nan
        if bad.any():
            i = _first(bad)
            raise DataValidationError(
                source,
                row=i + 1,
                column=column,
                expected="a number like 2 or 1.5",
                found=_value(text, i) if not pd.isna(text.iloc[i]) else None,
            )
    arr = values.to_numpy(dtype="float64", na_value=np.nan)
    bad = ~np.isfinite(arr) | ((arr <= 0) if strictly_positive else (arr < 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raw = s.iloc[i]
        raise DataValidationError(
            source,
            row=i + 1,
            column=column,
            expected="a finite number > 0" if strictly_positive else "a finite number >= 0",
            found=raw.item() if isinstance(raw, np.generic) else raw,
        )
    return pd.Series(arr, dtype="float64")


def _timestamps(s: pd.Series, source: str) -> pd.Series:
    s = s.reset_index(drop=True)
    expected = "a timestamp like 2011-03-01 12:30:00"
    if isinstance(s.dtype, pd.DatetimeTZDtype) or (isinstance(s.dtype, pd.ArrowDtype) and getattr(s.dtype.pyarrow_dtype, "tz", None)):
        raise DataValidationError(
            source,
            column="timestamp",
            expected="tz-naive timestamps",
            found=_Text(f"timestamps with time zone {s.dt.tz}"),
            fix="Convert them first, e.g. s.dt.tz_convert('UTC').dt.tz_localize(None).",
        )
    if ptypes.is_datetime64_any_dtype(s.dtype):
        parsed = s
        bad = parsed.isna()
        text = None
    else:
        text = s.astype(object).where(s.notna(), "").astype(STRING_DTYPE)
        stripped = text.str.strip()
        has_tz = stripped.str.contains(_TZ_SUFFIX, regex=True) & stripped.str.contains(r"\d[T ]\d|\d{2}:\d{2}", regex=True)
        if has_tz.any():
            i = _first(has_tz)
            raise DataValidationError(
                source,
                row=i + 1,
                column="timestamp",
                expected=expected + " without a time-zone offset",
                found=_value(text, i),
                fix="Write all timestamps in one time zone (e.g. UTC) without the offset.",
            )
        parsed = pd.to_datetime(stripped, format="ISO8601", errors="coerce")
        bad = parsed.isna()
    if bad.any():
        i = _first(bad)
        raise DataValidationError(
            source,
            row=i + 1,
            column="timestamp",
            expected=expected,
            found=_value(text, i) if text is not None else None,
        )
    return parsed.dt.floor("s").astype(TIMESTAMP_DTYPE)


def _check_unique(s: pd.Series, source: str, column: str) -> None:
    dup = s.duplicated(keep="first")
    if dup.any():
        j = _first(dup)
        i = _first(s == s.iloc[j])
        raise DataValidationError(
            source,
            rows=(i + 1, j + 1),
            row=j + 1,
            column=column,
            expected=f"a unique {column}",
            found=_Text(f"'{s.iloc[j]}' in both"),
            fix="Give each row its own id or remove the duplicate.",
        )


def _assemble(cols: dict, order: Iterable[str]) -> pd.DataFrame:
    return pd.DataFrame({c: cols[c].reset_index(drop=True) for c in order})

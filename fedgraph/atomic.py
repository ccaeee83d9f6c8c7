"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every file fedgraph writes (configs, metrics, checkpoints, ledgers, exports) goes through
these helpers: the bytes are written to a temporary file in the same directory, flushed and
fsynced, then moved over the target with :func:`os.replace`, which is atomic on POSIX and
Windows. If anything fails before the move, the temporary file is removed and the target is
untouched.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

PathLike = str | os.PathLike


@contextlib.contextmanager
def atomic_path(target: PathLike, *, private: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success move it over ``target``.

    Use this for writers that want a path rather than a file object (``torch.save``,
    ``DataFrame.to_parquet``, ``matplotlib.savefig``). If the block raises, the temporary file
    is deleted and ``target`` keeps its previous content (or stays absent). The file gets the
    mode a plain ``open`` would give it (0666 less the umask), or 0600 with ``private``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    if not private:  # mkstemp makes 0600 files; outputs (reports, exports, plots) are not secrets
        os.fchmod(fd, 0o666 & ~_UMASK)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` would briefly set it for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


#: Read once: the umask of a process does not change while fedgraph runs, and atomic writes are frequent.
_UMASK = _umask()


def atomic_write_bytes(target: PathLike, data: bytes, *, private: bool = False) -> Path:
    """Write ``data`` to ``target`` atomically (mode 0600 with ``private``) and return the target path."""
    with atomic_path(target, private=private) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: PathLike, text: str, *, private: bool = False) -> Path:
    """Write UTF-8 ``text`` to ``target`` atomically and return the target path."""
    return atomic_write_bytes(target, text.encode("utf-8"), private=private)


def atomic_write_json(target: PathLike, obj: Any, *, indent: int = 2) -> Path:
    """Serialise ``obj`` as JSON (sorted keys kept as given) and write it atomically."""
    return atomic_write_text(target, json.dumps(_finite(obj), indent=indent, default=_json_default, allow_nan=False) + "\n")


def _finite(obj: Any) -> Any:
    """``obj`` with every NaN/inf float (not valid JSON) as ``None``: "no figure" (a shop with no
    evaluable users); the counts beside a figure say how many users or shops it covers."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return _finite(obj.tolist())
    return obj


def atomic_write_with(target: PathLike, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` and move the result over ``target`` atomically."""
    with atomic_path(target) as tmp:
        writer(tmp)
    return Path(target)


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays, Paths: the types fedgraph's reports actually contain.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")

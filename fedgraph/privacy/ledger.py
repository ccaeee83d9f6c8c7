"""A shop's privacy ledger: an append-only, tamper-evident record of every DP release.

One ledger per shop, in its own directory:

- ``ledger.jsonl``: one JSON object per line. The first entry is the ``plan`` (target ε, δ,
  noise multiplier, sample rate, planned steps, accountant); then one ``round`` entry per
  round the shop trained in (steps, sample rate, noise multiplier, clipping norm, ε so far
  under RDP and PRV, the reported ε and its accountant, model version) and one ``skip``
  entry per round it refused because the budget would have been exceeded.
- ``ledger.head.json``: the number of entries and the MAC of the last one (written
  atomically after each append).
- ``ledger.key``: a random 32-byte key (mode 0600) created with the ledger, beside it in a
  simulation; a deployed shop keeps it outside its state directory (:func:`bind_key`), so that
  a ledger deleted, truncated or rewritten by someone who can write the state directory but
  not the key is detected.

Each entry carries ``prev`` (the MAC of the entry before it) and ``mac``, an HMAC-SHA256
(``cryptography``) over its canonical JSON. :meth:`PrivacyLedger.verify` walks the chain
and the head: an edited, reordered, deleted or truncated entry, a missing head or a ledger
that vanished while its key remains all raise :class:`LedgerTamperedError`, and training
refuses to continue. A crash between writing an entry and its head is recognised (a single
extra, correctly chained entry) and repaired; a torn last line is dropped only when the
head proves it was never committed.

What this does not stop: someone holding the key who rewrites the chain consistently, or
restores ledger and key from an older backup. The server's round history records each shop's
ledger length and ε per round and refuses a shop whose figures go backwards; ``fedgraph audit``
compares the two.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, hmac

from fedgraph.atomic import atomic_write_text

LEDGER_FILE = "ledger.jsonl"
HEAD_FILE = "ledger.head.json"
KEY_FILE = "ledger.key"
GENESIS = "0" * 64


class LedgerTamperedError(RuntimeError):
    """The ledger on disk is not the one this shop wrote: refuse to go on."""


def _canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in entry.items() if k != "mac"}, sort_keys=True, separators=(",", ":"), allow_nan=True).encode()


def _mac(key: bytes, entry: dict[str, Any]) -> str:
    h = hmac.HMAC(key, hashes.SHA256())
    h.update(_canonical(entry))
    return h.finalize().hex()


_BOUND_KEYS: dict[Path, Path] = {}


def bind_key(directory: str | Path, key_path: str | Path) -> None:
    """Keep the HMAC key of the ledger in ``directory`` at ``key_path`` (for this process).

    Every :class:`PrivacyLedger` opened on ``directory`` afterwards uses that key. A key still
    beside the ledger (written before the key moved out) is moved to ``key_path`` (0600) when
    nothing is there yet. Raises :class:`LedgerTamperedError` when both exist and differ.
    """
    directory, key_path = Path(directory).resolve(), Path(key_path).resolve()
    old = directory / KEY_FILE
    if old.exists() and old != key_path:
        key = old.read_bytes()
        if key_path.exists():
            if key_path.read_bytes() != key:
                raise LedgerTamperedError(
                    f"{old}: a second ledger key differs from the shop's key {key_path}; remove the one that is not the shop's"
                )
        else:
            _write_key(key_path, key)
        old.unlink()
    _BOUND_KEYS[directory] = key_path


def _write_key(path: Path, key: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
        f.flush()
        os.fsync(f.fileno())


class PrivacyLedger:
    """The privacy ledger in ``directory`` (see module docs). Creating one writes nothing until :meth:`append`.

    Args:
        directory: where ``ledger.jsonl`` and ``ledger.head.json`` live.
        key_path: the HMAC key; default the one bound with :func:`bind_key`, else
            ``directory/ledger.key``.
    """

    def __init__(self, directory: str | Path, key_path: str | Path | None = None) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LEDGER_FILE
        self.head_path = self.directory / HEAD_FILE
        bound = _BOUND_KEYS.get(self.directory.resolve())
        self.key_path = Path(key_path) if key_path is not None else bound or self.directory / KEY_FILE

    # ------------------------------------------------------------------ reading
    def exists(self) -> bool:
        return self.path.exists() or self.head_path.exists() or self.key_path.exists()

    def _key(self, create: bool = False) -> bytes:
        if self.key_path.exists():
            key = self.key_path.read_bytes()
            if len(key) != 32:
                raise LedgerTamperedError(f"{self.key_path}: the ledger key is {len(key)} bytes, expected 32; the key was altered")
            return key
        if not create:
            raise LedgerTamperedError(f"{self.key_path}: the ledger key is missing")
        self.directory.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        _write_key(self.key_path, key)
        return key

    def _read_lines(self) -> tuple[list[dict[str, Any]], bool]:
        """Parsed entries, and whether a torn (unterminated, unparseable) last line was found."""
        if not self.path.exists():
            return [], False
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        torn = False
        if lines and lines[-1] == b"":
            lines = lines[:-1]
        elif lines:  # the file does not end in a newline: the last write may have been torn
            try:
                json.loads(lines[-1])
            except ValueError:
                lines, torn = lines[:-1], True
        entries = []
        for number, line in enumerate(lines, start=1):
            try:
                entry = json.loads(line)
            except ValueError as exc:
                raise LedgerTamperedError(f"{self.path}:{number}: not valid JSON ({exc}); the ledger was edited or corrupted") from exc
            if not isinstance(entry, dict):
                raise LedgerTamperedError(f"{self.path}:{number}: an entry must be a JSON object")
            entries.append(entry)
        return entries, torn

    def _read_head(self) -> dict[str, Any] | None:
        if not self.head_path.exists():
            return None
        try:
            head = json.loads(self.head_path.read_text())
            return {"count": int(head["count"]), "mac": str(head["mac"])}
        except (ValueError, KeyError, TypeError) as exc:
            raise LedgerTamperedError(f"{self.head_path}: unreadable ledger head ({exc})") from exc

    def verify(self, *, repair: bool = False) -> list[dict[str, Any]]:
        """Check the whole chain and the head; return the entries. Raises :class:`LedgerTamperedError`.

        With ``repair``, the two crash artefacts (an entry written but its head not yet, a torn
        last line never committed) are fixed on disk.
        """
        if not self.exists():
            return []
        key = self._key()
        entries, torn = self._read_lines()
        head = self._read_head()
        if head is None:
            raise LedgerTamperedError(
                f"{self.head_path} is missing while {self.path.name} or the key exists: the ledger cannot be checked for truncation"
            )
        prev = GENESIS
        for seq, entry in enumerate(entries):
            if entry.get("seq") != seq:
                raise LedgerTamperedError(f"{self.path}: entry {seq} has seq {entry.get('seq')!r}; entries were removed or reordered")
            if entry.get("prev") != prev:
                raise LedgerTamperedError(f"{self.path}: entry {seq} does not chain to the one before it; the ledger was edited")
            if not secrets.compare_digest(str(entry.get("mac", "")), _mac(key, entry)):
                raise LedgerTamperedError(f"{self.path}: entry {seq} fails its integrity check; it was edited after it was written")
            prev = entry["mac"]
        count, committed = len(entries), head["count"]
        if count < committed:
            raise LedgerTamperedError(
                f"{self.path} holds {count} entries but its head records {committed}: the ledger was truncated or rolled back"
            )
        if count > committed + 1:
            raise LedgerTamperedError(f"{self.path} holds {count} entries but its head records {committed}: entries were added by hand")
        if (entries[committed - 1]["mac"] if committed else GENESIS) != head["mac"]:
            raise LedgerTamperedError(f"{self.path}: the entries do not match the ledger head; the ledger was replaced")
        if repair and (torn or count == head["count"] + 1):
            self._rewrite(entries)
            self._write_head(entries)
        return entries

    def entries(self) -> list[dict[str, Any]]:
        """The verified entries (no repair)."""
        return self.verify()

    def plan(self) -> dict[str, Any] | None:
        entries = self.verify()
        return entries[0] if entries and entries[0].get("kind") == "plan" else None

    def rounds(self) -> Iterator[dict[str, Any]]:
        return (e for e in self.verify() if e.get("kind") == "round")

    # ------------------------------------------------------------------ writing
    def _write_head(self, entries: list[dict[str, Any]]) -> None:
        head = {"count": len(entries), "mac": entries[-1]["mac"] if entries else GENESIS}
        atomic_write_text(self.head_path, json.dumps(head) + "\n", private=True)

    def _rewrite(self, entries: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(e, sort_keys=True, allow_nan=True) + "\n" for e in entries)
        atomic_write_text(self.path, text, private=True)

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Verify the ledger, then append one ``kind`` entry with ``fields``; return it."""
        fresh = not self.exists()
        key = self._key(create=fresh)
        if fresh:
            self._write_head([])
        entries = self.verify(repair=True)
        entry = {
            **fields,
            "kind": kind,
            "seq": len(entries),
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "prev": entries[-1]["mac"] if entries else GENESIS,
        }
        entry["mac"] = _mac(key, entry)
        line = (json.dumps(entry, sort_keys=True, allow_nan=True) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._write_head(entries + [entry])
        return entry

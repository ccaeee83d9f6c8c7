"""Where a shop daemon keeps what (``STATE_DIR`` layout; see :mod:`fedgraph.deploy.shop_state`).

A module of its own, with no heavy imports, so that ``fedgraph client status`` stays quick.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class StateDirBusy(RuntimeError):
    """Another process (a running shop daemon) holds the state directory."""


@dataclass(frozen=True)
class ShopPaths:
    root: Path

    @property
    def events(self) -> Path:
        return self.root / "events.sqlite"

    @property
    def graph(self) -> Path:
        return self.root / "graph.sqlite"

    @property
    def items(self) -> Path:
        return self.root / "items.npz"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def model(self) -> Path:
        return self.root / "model" / "global.pt"

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def last_message(self) -> Path:
        return self.root / "last_message.json"

    @property
    def log(self) -> Path:
        return self.root / "logs" / "daemon.jsonl"

    @property
    def flwr_home(self) -> Path:
        return self.root / "flwr-home"

    @property
    def lock(self) -> Path:
        return self.root / "daemon.lock"

    @contextlib.contextmanager
    def exclusive(self, purpose: str) -> Iterator[None]:
        """Hold the state directory for ``purpose`` (the daemon while it runs, ``forget`` while it
        erases): an advisory ``flock`` on ``STATE_DIR/daemon.lock``, released when the process
        ends however it ends.

        Raises:
            StateDirBusy: another process holds it; the message names its pid and what to do.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
                try:
                    who = json.loads(holder)
                except ValueError:
                    who = {}
                raise StateDirBusy(
                    f"{self.root} is in use by {who.get('purpose', 'another fedgraph process')} (pid {who.get('pid', '?')}); "
                    f"stop it first (Ctrl-C or SIGTERM to the shop daemon), then run this again and restart it"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "purpose": purpose}).encode(), 0)
            yield
        finally:
            os.close(fd)

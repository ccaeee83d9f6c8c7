"""Where a shop daemon keeps what (``STATE_DIR`` layout; see :mod:`fedgraph.deploy.shop_state`).

A module of its own, with no heavy imports, so that ``fedgraph client status`` stays quick.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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

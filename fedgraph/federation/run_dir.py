"""The run directory: everything one run reads and writes, in one place.

::

    RUN_DIR/
      config.toml              resolved configuration (every process reads this)
      shops/index.json         shop names in partition order, feature size
      shops/<shop>.npz         one shop's training data (fedgraph.shop.ShopData): held-out = validation
      shops/<shop>.final.npz   the same shop for test figures: the whole training period, held-out = test
      checkpoints/round-NNNN.pt  global model after round N (atomic, with a digest)
      federated_history.json   per-round, per-shop training and evaluation figures
      baselines/<method>.json  results of the comparison methods
      metrics.json, metrics.png, graph.sqlite, flower.log
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from fedgraph.atomic import atomic_path, atomic_write_json
from fedgraph.config import RunConfig
from fedgraph.models.interest_model import InterestModel


class CheckpointError(RuntimeError):
    """A checkpoint is unreadable or does not match its digest."""


#: Parsed ``shops/index.json`` per path with the (inode, mtime, size) it was read at.
_INDEXES: dict[Path, tuple[tuple[int, int, int], dict[str, Any]]] = {}


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def at(cls, path: str | Path) -> RunDir:
        return cls(Path(path).resolve())

    # ------------------------------------------------------------ layout
    @property
    def config_file(self) -> Path:
        return self.path / "config.toml"

    @property
    def shops_dir(self) -> Path:
        return self.path / "shops"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def history_file(self) -> Path:
        return self.path / "federated_history.json"

    @property
    def baselines_dir(self) -> Path:
        return self.path / "baselines"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.json"

    @property
    def graph_file(self) -> Path:
        return self.path / "graph.sqlite"

    # ------------------------------------------------------------ config and shops
    @cached_property
    def config(self) -> RunConfig:
        if not self.config_file.exists():
            raise FileNotFoundError(f"{self.path} is not a fedgraph run directory (no config.toml)")
        return RunConfig.load(self.config_file)

    @cached_property
    def index(self) -> dict[str, Any]:
        """``shops/index.json``, parsed once per process while the file is unchanged (a ClientApp
        opens a RunDir per message and the index lists every shop; profile: simulations/RESULTS.md,
        "Simulations past one machine"). Treat it as read-only: the parsed dict is shared."""
        path = self.shops_dir / "index.json"
        try:
            st = path.stat()
        except FileNotFoundError:
            raise FileNotFoundError(f"{path} is missing: the run's data was not prepared (re-run fedgraph simulate)") from None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = _INDEXES.get(path)
        if cached is None or cached[0] != key:
            cached = (key, json.loads(path.read_text()))
            _INDEXES[path] = cached
        return cached[1]

    @property
    def shop_names(self) -> list[str]:
        """Every shop of the run: each is evaluated and gets an interest graph."""
        return list(self.index["shops"])

    @property
    def round_shops(self) -> list[str]:
        """The shops in the federated rounds (a Flower partition id indexes this list): those with a
        customer to train on. A shop that cannot train is not called in any round; it is still
        evaluated with the global model. Runs prepared before this list existed: every shop."""
        return list(self.index.get("round_shops", self.index["shops"]))

    def shop_file(self, shop: str) -> Path:
        """The data every model of the run trains on; its held-out items are the *validation* split
        (each user's latest items of the training period) in a simulation, where every choice is
        made (round kept, blend weights, λ). In a deployment it is the shop's own whole log."""
        return self.shops_dir / f"{shop}.npz"

    def final_shop_file(self, shop: str) -> Path:
        """Simulations only: the whole training period (training + validation items) as history and
        the *test* items held out; test figures are computed once on it, for the chosen models."""
        return self.shops_dir / f"{shop}.final.npz"

    @property
    def text_dim(self) -> int:
        """Width of the text block of the item features (``index.json`` -> ``text_encoder``;
        run directories written before it was recorded used MiniLM: 384)."""
        from fedgraph.features import LEGACY_TEXT_DIM

        return int(self.index.get("text_encoder", {}).get("dim", LEGACY_TEXT_DIM))

    def new_model(self, num_local_items: int = 0) -> InterestModel:
        """A freshly initialised model (same seed → same shared weights in every process).

        ``num_local_items`` > 0 adds the shop-private item part (if ``model.local_items``).
        """
        return InterestModel.from_config(
            self.config.model,
            in_features=int(self.index["feature_size"]),
            text_dim=self.text_dim,
            num_local_items=num_local_items,
            seed=self.config.train.seed,
        )

    def local_state_file(self, shop: str, server_round: int | None = None) -> Path:
        """Where a shop keeps its private parameters between rounds (never sent anywhere);
        with ``server_round``, the copy kept after that round (so the round chosen on validation
        can be served with its own private part)."""
        if server_round is None:
            return self.path / "local" / f"{shop}.pt"
        return self.path / "local" / shop / f"round-{server_round:04d}.pt"

    # ------------------------------------------------------------ checkpoints
    def privacy_dir(self, shop: str) -> Path:
        """Where ``shop`` keeps its privacy ledger (it never leaves the shop)."""
        return self.path / "privacy" / shop

    @property
    def server_privacy_dir(self) -> Path:
        """The server's client-level DP ledger (``privacy.client_dp``)."""
        return self.path / "privacy-server"

    def checkpoint_file(self, server_round: int) -> Path:
        return self.checkpoints_dir / f"round-{server_round:04d}.pt"

    def checkpoint_rounds(self) -> list[int]:
        if not self.checkpoints_dir.exists():
            return []
        found = (re.fullmatch(r"round-(\d{4})\.pt", p.name) for p in self.checkpoints_dir.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def save_checkpoint(self, server_round: int, state: dict[str, torch.Tensor], extra: dict[str, Any] | None = None) -> Path:
        state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        payload = {"round": server_round, "state_dict": state, "digest": state_digest(state), "extra": extra or {}}
        with atomic_path(self.checkpoint_file(server_round)) as tmp:
            torch.save(payload, tmp)
        return self.checkpoint_file(server_round)

    def load_checkpoint(self, server_round: int) -> dict[str, Any]:
        path = self.checkpoint_file(server_round)
        earlier = [r for r in self.checkpoint_rounds() if r < server_round]
        hint = (
            f"delete it to resume from round {earlier[-1]} ({self.checkpoint_file(earlier[-1]).name})"
            if earlier
            else "delete it to restart training from round 0"
        )
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            state = payload["state_dict"]
            ok = payload["digest"] == state_digest(state) and payload["round"] == server_round
        except Exception as exc:
            raise CheckpointError(f"checkpoint {path} is unreadable ({type(exc).__name__}: {exc}); {hint}") from exc
        if not ok:
            raise CheckpointError(f"checkpoint {path} does not match its digest (modified or corrupted); {hint}")
        return payload

    def latest_checkpoint(self) -> dict[str, Any] | None:
        rounds = self.checkpoint_rounds()
        return self.load_checkpoint(rounds[-1]) if rounds else None

    # ------------------------------------------------------------ history
    def read_history(self) -> dict[str, Any]:
        if not self.history_file.exists():
            return {"rounds": []}
        return json.loads(self.history_file.read_text())

    def write_history(self, history: dict[str, Any]) -> None:
        atomic_write_json(self.history_file, history)


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, shapes and bytes of a state dict (the model version)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()

"""The model a shop's interest graph was built from, opened for queries the graph store cannot
answer by itself (a free-text topic's audience).

:func:`open_served_shop` opens it from either place fedgraph leaves one:

* a simulation's run directory (it has ``selection.json``): the global model of the round kept on
  validation plus the shop's private part of that round, over the shop's whole training period
  (``shops/<shop>.final.npz``), as :func:`fedgraph.simulation.build_graphs` used it;
* a shop daemon's state directory (it has ``run/config.toml``): the newest global model the
  server sent (``model/global.pt``; the seeded initial model before the first round) over the
  shop's training data (``run/shops/<shop>.npz``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


class ServingError(RuntimeError):
    """No model can be opened at the location given (with what to give instead)."""


@dataclass
class ServedShop:
    """A shop's data and its model, ready to score (``model`` is in eval mode, on the CPU)."""

    shop: str
    data: Any  # fedgraph.shop.ShopData
    model: Any  # fedgraph.models.InterestModel
    config: Any  # fedgraph.config.RunConfig
    round: int
    history: int
    #: With the hybrid (simulations): the share of the global model in the served blend.
    hybrid_alpha: float | None = None

    @torch.no_grad()
    def user_embeddings(self) -> torch.Tensor:
        """``[num_users, user_embedding_size]`` for every user of the shop, from their histories."""
        import numpy as np

        from fedgraph.evaluation import user_embeddings

        return user_embeddings(self.model, self.data, np.arange(self.data.num_users), history=self.history)


def open_served_shop(location: str | Path, shop: str) -> ServedShop:
    """The model and data behind ``shop``'s graph at ``location`` (see module docs).

    Raises:
        ServingError: ``location`` is neither a run directory nor a state directory, or the
            shop has no prepared data there.
    """
    from fedgraph.federation.run_dir import RunDir
    from fedgraph.federation.shop_side import model_for_shop
    from fedgraph.shop import ShopData

    location = Path(location)
    if (location / "selection.json").is_file():
        run = RunDir.at(location)
        selection = json.loads((location / "selection.json").read_text())
        kept = int(selection["round"])
        alpha = (selection.get("per_shop") or {}).get(shop, {}).get("alpha")
        data_file = run.final_shop_file(shop)
        state = run.load_checkpoint(kept)["state_dict"] if kept > 0 else None
    elif (location / "run" / "config.toml").is_file():
        from fedgraph.deploy.paths import ShopPaths

        run = RunDir.at(location / "run")
        alpha = None
        data_file = run.shop_file(shop)
        model_file = ShopPaths(location).model
        payload = torch.load(model_file, map_location="cpu", weights_only=True) if model_file.exists() else None
        kept = int(payload["round"]) if payload else 0
        state = payload["state_dict"] if payload else None
    else:
        raise ServingError(
            f"{location} is not a run directory (no selection.json) or a shop daemon's state directory (no run/config.toml); "
            "this query needs the model, not only the graph file: give RUN_DIR or STATE_DIR"
        )
    if not data_file.exists():
        shops = sorted(p.name.split(".")[0] for p in data_file.parent.glob("*.npz"))
        raise ServingError(f"shop {shop!r} has no prepared data in {data_file.parent} (shops there: {', '.join(shops) or 'none'})")
    data = ShopData.load(data_file)
    if state is None:
        torch.manual_seed(run.config.train.seed)
        state = run.new_model(data.num_items).shared_state_dict()
    model = model_for_shop(run, data, state, server_round=kept if (location / "selection.json").is_file() else None)
    model.eval()
    return ServedShop(shop, data, model, run.config, kept, run.config.evaluation.history, alpha)

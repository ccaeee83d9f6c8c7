"""What the ClientApp needs to know about where a shop's data is, in simulation and in deployment.

In simulation (``fedgraph simulate``) the run directory comes from the run config and the shop is
the SuperNode's ``partition-id``. A shop daemon (``fedgraph client start``) instead starts its
SuperNode with ``--node-config shop-config="/path/shop.toml"``: the ClientApp then

1. checks that the server's model settings match the shop's (``fedgraph-model`` in the run config),
2. keeps the global model it received (the daemon re-embeds users with it between rounds),
3. rebuilds the shop's training data from its event log if events arrived since the last round,
4. and trains/evaluates on ``STATE_DIR/run`` (whose shop list is the server's, so the
   ``partition-id`` it reports is the shop's position in the server's list).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from fedgraph.deploy.settings import ShopConfig
from fedgraph.federation.shop_side import ShopRefusal

NODE_CONFIG_KEY = "shop-config"


class ShopMismatch(ShopRefusal):
    """The server's federation does not fit this shop (different model settings, shop not listed)."""


def local_errors(handler: Callable[..., Any]) -> Callable[..., Any]:
    """A ClientApp handler whose errors, in a shop daemon, reach the server as one generic line.

    A :class:`~fedgraph.federation.shop_side.ShopRefusal` is sent as it is (its text is meant for
    the server). Any other exception's text may hold customer-derived figures (sizes, rates,
    ids): it is logged in the shop (``fedgraph.shop`` logger: the daemon's log) with its traceback,
    and the server is told only which kind of message failed. In simulation errors pass unchanged.
    """

    @functools.wraps(handler)
    def wrapped(msg: Any, context: Any) -> Any:
        try:
            return handler(msg, context)
        except ShopRefusal:
            raise
        except Exception as exc:
            if NODE_CONFIG_KEY not in context.node_config:
                raise
            kind = str(msg.metadata.message_type)
            logging.getLogger("fedgraph.shop").exception("the %s message of run %s failed in this shop", kind, msg.metadata.run_id)
            raise RuntimeError(
                f"the shop could not handle a {kind} message ({type(exc).__name__}); the reason is in the shop's own log"
            ) from None

    return wrapped


def bind_ledger_key(cfg: ShopConfig) -> None:
    """Keep this shop's privacy-ledger key at ``cfg.ledger_key_path``, outside its state directory
    (a key left beside the ledger by an older version is moved there): :func:`fedgraph.privacy.ledger.bind_key`."""
    from fedgraph.privacy.ledger import bind_key

    bind_key(cfg.state_dir / "run" / "privacy" / cfg.shop.name, cfg.ledger_key_path)


@lru_cache(maxsize=8)
def _shop(path: str) -> tuple[ShopConfig, Any, Any]:
    from fedgraph.deploy.shop_state import ShopPaths, load_catalog_features

    cfg = ShopConfig.load(path)
    bind_ledger_key(cfg)
    paths = ShopPaths(cfg.state_dir)
    config = cfg.run_config()
    catalog = load_catalog_features(cfg.resolve(cfg.source.catalog), cfg.shop.name, config, paths.items)
    return cfg, paths, catalog


def shop_location(context: Any, msg: Any) -> tuple[str, int]:
    """``(run_dir, partition_id)`` for :func:`fedgraph.federation.shop_side.shop_train`/``shop_evaluate``."""
    node_config = context.node_config
    if NODE_CONFIG_KEY not in node_config:  # simulation
        return str(context.run_config["run-dir"]), int(node_config["partition-id"])
    return prepare_deployed_shop(str(node_config[NODE_CONFIG_KEY]), dict(context.run_config), msg)


def prepare_deployed_shop(shop_config: str, run_config: dict[str, Any], msg: Any) -> tuple[str, int]:
    from fedgraph.deploy.ingest import EventLog
    from fedgraph.deploy.shop_state import (
        model_signature,
        model_signature_digest,
        record_message,
        refresh_training_data,
        save_global_model,
        write_run_dir,
    )

    cfg, paths, catalog = _shop(shop_config)
    config = cfg.run_config()
    shops = [s for s in str(run_config.get("shops", "")).split(",") if s]
    if cfg.shop.name not in shops:
        raise ShopMismatch(
            f"shop {cfg.shop.name!r} is not in the server's shop list {shops}; ask the server operator to add it to server.shops"
        )
    theirs = str(run_config.get("fedgraph-model", ""))
    if theirs and theirs != model_signature_digest(config):
        raise ShopMismatch(
            f"the server's model settings (digest {theirs}) differ from this shop's {model_signature(config)} "
            f"(digest {model_signature_digest(config)}, from {cfg.resolve(cfg.shop.run_config)}); "
            f"use the federation config file the server operator sent"
        )
    kind = str(msg.metadata.message_type)
    content = msg.content
    if kind.startswith("train") and "config" not in content:  # SecAgg+: the masks must cancel with the server's
        from fedgraph.federation.secagg_masks import RUN_CONFIG_KEY, check_same

        check_same(str(run_config.get(RUN_CONFIG_KEY, "")))
    check_protocol(config, kind, secure="config" not in content, source=cfg.resolve(cfg.shop.run_config))
    write_run_dir(paths, config, shops)
    if "config" in content:
        server_round = int(content["config"]["server-round"])
        global_state = content["arrays"].to_torch_state_dict()
    else:  # SecAgg+ speaks the legacy format: a FitIns record
        from fedgraph.federation.secure_aggregation import fitins_to_state
        from fedgraph.federation.shop_side import shared_names

        global_state, fit_config = fitins_to_state(content, shared_names(str(paths.run)))
        server_round = int(fit_config["server-round"])
    # A train message carries the global model of the previous round, evaluate the new one.
    model_round = server_round - 1 if kind.startswith("train") else server_round
    version, _ = save_global_model(paths, global_state, model_round, run_id=int(msg.metadata.run_id))
    events = EventLog(paths.events)
    try:
        offset, _ = refresh_training_data(paths, catalog, config, events)
    finally:
        events.close()
    record_message(paths, kind, server_round, version, event_offset=offset)
    _injected_delay(paths.root, kind)
    return str(Path(paths.run)), shops.index(cfg.shop.name)


def check_protocol(config: Any, kind: str, *, secure: bool, source: Any) -> None:
    """The shop, not the server, decides how it takes part (its own training configuration).

    Raises:
        ShopRefusal: a plain train message while the shop requires secure aggregation, or an
            evaluate message while it does not share evaluation figures.
    """
    p = config.privacy
    if kind.startswith("train") and not secure and p.secure_aggregation:
        raise ShopRefusal(
            "this shop requires secure aggregation (privacy.secure_aggregation in its configuration) and refuses a plain "
            "train message: start the server with the same federation config (SecAgg+ on), or the shop's operator sets "
            f"privacy.secure_aggregation = false in {source}"
        )
    if kind.startswith("evaluate") and not p.share_evaluation:
        raise ShopRefusal(
            "this shop does not send evaluation figures (privacy.share_evaluation = false, the deployment default); "
            f"set privacy.share_evaluation = false on the server too, or the shop's operator opts in in {source}"
        )


def keep_sent_update(run_dir: str, server_round: int, state: dict[str, Any]) -> None:
    """Deployment tests only (``FEDGRAPH_FAULT_INJECTION=1``): keep the update this shop sends in
    ``STATE_DIR/sent/round-NNNN.pt`` so a test can compare the server's secure sum with FedAvg."""
    if os.environ.get("FEDGRAPH_FAULT_INJECTION") != "1":
        return
    import torch

    from fedgraph.atomic import atomic_path

    target = Path(run_dir).parent / "sent" / f"round-{server_round:04d}.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        torch.save({k: v.detach().cpu() for k, v in state.items()}, tmp)


def _injected_delay(state_dir: Path, kind: str) -> None:
    """Fault injection for the deployment tests only (``FEDGRAPH_FAULT_INJECTION=1``): a train
    message waits the seconds written in ``STATE_DIR/fault-train-delay-s``, so a test can kill the
    shop while a round is in flight."""
    if os.environ.get("FEDGRAPH_FAULT_INJECTION") != "1" or not kind.startswith("train"):
        return
    delay = state_dir / "fault-train-delay-s"
    if delay.exists():
        time.sleep(float(delay.read_text().strip() or 0))

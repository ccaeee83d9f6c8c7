"""Flower ClientApp: one shop. Loads the global weights, calls the library, replies."""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp

from fedgraph.deploy.shop_app import keep_sent_update, local_errors, shop_location  # run dir + partition id (simulation or shop daemon)
from fedgraph.federation.secure_aggregation import fitins_to_state, state_to_fitres
from fedgraph.federation.shop_side import shared_names, shop_evaluate, shop_item_counts, shop_train

app = ClientApp()


@app.train()
@local_errors
def train(msg: Message, context: Context) -> Message:
    config = msg.content["config"]
    state, metrics = shop_train(
        *shop_location(context, msg),
        msg.content["arrays"].to_torch_state_dict(),
        server_round=int(config["server-round"]),
        proximal_mu=float(config.get("proximal-mu", 0.0)),
    )
    return Message(RecordDict({"arrays": ArrayRecord(state), "metrics": MetricRecord(metrics)}), reply_to=msg)


@app.evaluate()
@local_errors
def evaluate(msg: Message, context: Context) -> Message:
    metrics = shop_evaluate(
        *shop_location(context, msg),
        msg.content["arrays"].to_torch_state_dict(),
    )
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)


@app.query()
@local_errors
def item_counts(msg: Message, context: Context) -> Message:
    """Federated EASE: the shop's item co-occurrence counts (fedgraph.federation.item_counts)."""
    run_dir, partition_id = shop_location(context, msg)
    found = shop_item_counts(run_dir, partition_id)
    arrays = {
        f"{view}.{part}": torch.from_numpy(a) for view, coo in found["counts"].items() for part, a in zip(("row", "col", "count"), coo)
    }
    keys = ConfigRecord({f"{view}.keys": list(k) for view, k in found["keys"].items()} | {"partition-id": partition_id})
    return Message(RecordDict({"counts": ArrayRecord(arrays), "keys": keys}), reply_to=msg)


# With privacy.secure_aggregation the server runs Flower's SecAgg+ workflow (legacy message
# format): the mod does the key agreement, masking and share handling; the handler trains.
secagg_app = ClientApp(mods=[secaggplus_mod])


@secagg_app.train()
@local_errors
def train_secure(msg: Message, context: Context) -> Message:
    run_dir, partition_id = shop_location(context, msg)
    state, config = fitins_to_state(msg.content, shared_names(run_dir))
    state, metrics = shop_train(
        run_dir,
        partition_id,
        state,
        server_round=int(config["server-round"]),
        proximal_mu=float(config.get("proximal-mu", 0.0)),
        refuse_when_exhausted=True,
    )
    keep_sent_update(run_dir, int(config["server-round"]), state)  # deployment tests only
    return Message(state_to_fitres(state, metrics), reply_to=msg)


secagg_app.evaluate()(evaluate)

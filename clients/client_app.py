"""Flower ClientApp: one shop. Loads the global weights, calls the library, replies."""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedgraph.federation.shop_side import shop_evaluate, shop_train
from fedgraph.deploy.shop_app import shop_location  # run dir + partition id (simulation or shop daemon)

app = ClientApp()


@app.train()
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
def evaluate(msg: Message, context: Context) -> Message:
    metrics = shop_evaluate(
        *shop_location(context, msg),
        msg.content["arrays"].to_torch_state_dict(),
    )
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)

"""Secure aggregation of the shops' updates with Flower's SecAgg+ (Bell et al., 2020).

With ``privacy.secure_aggregation`` the training step of each round runs Flower's
:class:`~flwr.server.workflow.SecAggPlusWorkflow` instead of a plain send/receive: every
shop quantises its weights (clipped to ``±secagg_clipping_range``, ``secagg_quantization_range``
levels), scales them by its weight (1: SecAgg+ averages with uniform weights), masks them with pairwise and private masks
agreed with ``secagg_num_shares - 1`` neighbours (Shamir shares of the mask seeds, any
``secagg_reconstruction_threshold`` of which recover them), and the server only ever holds
masked vectors and their *sum*. Shops that drop out after sharing keys are unmasked from
their neighbours' shares, so a round survives drop-outs while every shop keeps at least
``threshold`` live neighbours. The result equals FedAvg with uniform weights up to the
quantisation error.

A shop sends nothing else in the clear beside its masked vector but the metrics of
:func:`fedgraph.federation.shop_side.shop_train` (with uniform weights: its ε and ledger length
under DP, nothing about its size or data otherwise).

In flwr 1.42 SecAgg+ exists only in the legacy API, so this module drives it with a
:class:`~flwr.server.compat.LegacyContext` and a legacy FedAvg that records what it was
given; the shop side is :data:`fedgraph.apps.client_app.secagg_app` (``secaggplus_mod``). The
workflow only *logs* "Secure aggregation halted" when a stage fails; here a halted round
raises :class:`SecureAggregationHalted`, so no metrics are reported for a model that was
never aggregated.
"""

from __future__ import annotations

import math
from typing import Any

import flwr.compat.common.recorddict_compat as compat
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, RecordDict
from flwr.common import FitRes, Parameters, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import ServerConfig
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.app_utils import start_update_client_manager_thread
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid

from fedgraph.config import ConfigError, RunConfig
from fedgraph.federation import secagg_masks

#: Flower's SecAgg+ masks are made from the whole seed in every process that imports this module.
MASKS = secagg_masks.install()


class SecureAggregationHalted(RuntimeError):
    """SecAgg+ stopped before producing an aggregate: the global model was not updated."""


def check_settings(config: RunConfig, num_shops: int) -> None:
    """Refuse settings under which SecAgg+ cannot complete, before any round starts."""
    p, fed = config.privacy, config.federation
    sampled = max(int(num_shops * fed.fraction_train), min(fed.min_train_shops, num_shops))
    if num_shops < 2 or sampled < 2:
        raise ConfigError("privacy.secure_aggregation needs at least 2 shops per round (SecAgg+ sums several updates)")
    if p.secagg_num_shares % 2 == 0 or p.secagg_num_shares < 3:
        raise ConfigError(
            f"privacy.secagg_num_shares={p.secagg_num_shares}: must be odd and >= 3 (with an even number Flower's "
            "SecAgg+ clients fail and the server never updates the model)"
        )
    neighbours = min(p.secagg_num_shares, sampled)
    if not (2 <= p.secagg_reconstruction_threshold < p.secagg_num_shares and p.secagg_reconstruction_threshold <= neighbours):
        raise ConfigError(
            f"privacy.secagg_reconstruction_threshold={p.secagg_reconstruction_threshold}: must be at least 2 and below "
            f"secagg_num_shares ({p.secagg_num_shares}), and each shop has only {neighbours} neighbours (itself included) "
            f"when {sampled} shops take part; lower the threshold or add shops"
        )


def shops_that_may_drop(config: RunConfig, num_shops: int) -> int:
    """How many shops may drop out of a SecAgg+ round before it halts: each dropped shop's mask
    seed must be rebuilt from ``secagg_reconstruction_threshold`` shares held by the shops that
    remain among its ``min(secagg_num_shares, sampled)`` neighbours (itself included)."""
    from fedgraph.privacy.client_level import sampled_shops_per_round

    p = config.privacy
    return max(0, min(p.secagg_num_shares, sampled_shops_per_round(config, num_shops)) - p.secagg_reconstruction_threshold)


def dropout_warning(config: RunConfig, num_shops: int) -> str | None:
    """A line for the operator when a SecAgg+ round cannot lose a single shop, else None."""
    if not config.privacy.secure_aggregation or shops_that_may_drop(config, num_shops) > 0:
        return None
    t = config.privacy.secagg_reconstruction_threshold
    return (
        f"secure aggregation with {num_shops} shop(s) per round and reconstruction threshold {t} cannot lose a single shop: "
        f"one shop that stops mid-round halts the round (the model is not updated). Run at least {t + 1} shops, or set "
        "privacy.secure_aggregation = false in the federation config (the server then sees each shop's update)"
    )


class _RecordingFedAvg(LegacyFedAvg):
    """Legacy FedAvg that keeps the result SecAgg+ hands it and the shops' metrics."""

    def __init__(self, round_config: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(on_fit_config_fn=lambda _: dict(round_config), **kwargs)
        self.aggregated: Parameters | None = None
        self.shop_metrics: list[dict[str, Any]] = []
        self.failures: list[str] = []

    def aggregate_fit(self, server_round, results, failures):  # type: ignore[override]
        self.shop_metrics = [dict(fitres.metrics) for _, fitres in results]
        self.failures = [str(f) for f in failures]
        aggregated, metrics = super().aggregate_fit(server_round, results, failures)
        self.aggregated = aggregated
        return aggregated, metrics


#: Every shop's SecAgg+ weight, and the ``max_weight`` the workflow is told: SecAgg+ runs with
#: uniform weights (``federation.weights`` is "uniform" under secure aggregation), so the weight
#: factor is exactly 1 and no shop's user count is sent, masked or not.
SHOP_WEIGHT = 1


def secure_train_round(
    grid: Grid, config: RunConfig, server_round: int, arrays: ArrayRecord, round_config: dict[str, Any]
) -> tuple[ArrayRecord, list[dict[str, Any]], list[str]]:
    """One SecAgg+ training step: the new global weights (the mean of the shops' updates), the
    shops' metrics, the failures."""
    p, fed = config.privacy, config.federation
    num_nodes = len(list(grid.get_node_ids()))
    strategy = _RecordingFedAvg(
        {**round_config, "server-round": server_round},
        fraction_fit=fed.fraction_train,
        fraction_evaluate=0.0,
        min_fit_clients=min(fed.min_train_shops, num_nodes),
        min_available_clients=num_nodes,
        accept_failures=True,
    )
    manager = SimpleClientManager()
    _, stop, registered = start_update_client_manager_thread(grid, manager)
    try:
        if not registered.wait(timeout=fed.round_timeout_s):
            raise SecureAggregationHalted(f"round {server_round}: the shops did not register with the server in time")
        context = LegacyContext(
            Context(run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config={}),
            config=ServerConfig(num_rounds=config.train.rounds, round_timeout=fed.round_timeout_s),
            strategy=strategy,
            client_manager=manager,
        )
        names = list(arrays.keys())
        context.state[MAIN_PARAMS_RECORD] = arrays
        context.state[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: server_round})
        workflow = SecAggPlusWorkflow(
            num_shares=p.secagg_num_shares,
            reconstruction_threshold=p.secagg_reconstruction_threshold,
            max_weight=float(SHOP_WEIGHT),
            clipping_range=p.secagg_clipping_range,
            quantization_range=p.secagg_quantization_range,
            timeout=fed.round_timeout_s,
        )
        workflow(grid, context)
    finally:
        stop.set()
    if strategy.aggregated is None:
        raise SecureAggregationHalted(
            f"round {server_round}: secure aggregation halted before the sum was recovered (too few shops answered "
            f"each stage for threshold {p.secagg_reconstruction_threshold}); the global model was not updated"
        )
    values = parameters_to_ndarrays(strategy.aggregated)
    if len(values) != len(names):
        raise SecureAggregationHalted(f"round {server_round}: the secure sum has {len(values)} arrays, expected {len(names)}")
    return ArrayRecord({n: Array(v) for n, v in zip(names, values)}), strategy.shop_metrics, strategy.failures


# ---------------------------------------------------------------------- shop side
def fitins_to_state(content: RecordDict, names: list[str]) -> tuple[dict, dict[str, Any]]:
    """The global weights (as a torch state dict with our names) and the config of a legacy fit instruction."""
    import torch

    fitins = compat.recorddict_to_fitins(content, keep_input=True)
    values = parameters_to_ndarrays(fitins.parameters)
    if len(values) != len(names):
        raise ValueError(f"the server sent {len(values)} arrays; this shop's model has {len(names)} shared tensors")
    return {n: torch.from_numpy(v.copy()) for n, v in zip(names, values)}, dict(fitins.config)


def state_to_fitres(state: dict, metrics: dict[str, Any]) -> RecordDict:
    from flwr.common import Code, Status

    values = [v.detach().cpu().numpy() for v in state.values()]
    fitres = FitRes(Status(Code.OK, "ok"), ndarrays_to_parameters(values), SHOP_WEIGHT, dict(metrics))
    return compat.fitres_to_recorddict(fitres, keep_input=False)


def quantisation_error_bound(config: RunConfig, num_shops: int) -> float:
    """Largest per-value difference from plain FedAvg that SecAgg+'s quantisation can cause."""
    p = config.privacy
    return num_shops * 2 * p.secagg_clipping_range / p.secagg_quantization_range + 1e-6 * math.sqrt(num_shops)

"""The server's round loop: train, aggregate, checkpoint, evaluate, resume.

Flower's strategies decide *whom* to ask and *how* to aggregate (``configure_train`` /
``aggregate_train``); this loop adds what a long federated run needs: a checkpoint of the
global model after every round (atomic, digest-checked), a per-round history with per-shop
figures, a progress line per round, resumption from the last checkpoint, and a loud failure
when too few shops answer instead of silently keeping stale weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedgraph.console import plural
from fedgraph.federation.run_dir import RunDir, state_digest
from fedgraph.federation.simulation_link import skip_idle_polls
from fedgraph.privacy.client_level import ServerPrivacyLedger

PREFIX = "[fedgraph]"


class RoundFailed(RuntimeError):
    """A round could not produce a new global model (too few shops answered)."""


def _short(reason: str) -> str:
    """The useful line of a shop's error (Ray wraps it in tracebacks)."""
    text = str(reason)
    if "Message: " in text:
        text = text[text.rindex("Message: ") + len("Message: ") :]
    lines = [line.strip() for line in text.replace("\\n", "\n").splitlines() if line.strip()]
    text = lines[0] if lines else text
    text = text.strip()
    while text and text[-1] in "\\'\">)" and text.count("(") < text.count(")") + (text[-1] != ")"):
        text = text[:-1]
    return text.strip()[:300]


#: Flower node id -> shop name, learnt from every reply that names its shop (a shop's replies
#: carry its partition id); failures are reported by shop name once the node is known.
_node_names: dict[int, str] = {}


def _name_failures(failures: list[str], names: dict[int, str]) -> list[str]:
    """``"node N: reason"`` -> ``"<shop>: reason"`` for the nodes whose shop is known."""
    out = []
    for failure in failures:
        head, _, rest = failure.partition(": ")
        node = head[5:] if head.startswith("node ") else ""
        out.append(f"{names[int(node)]}: {rest}" if node.isdigit() and int(node) in names else failure)
    return out


def _split_replies(replies: Iterable[Message], run: RunDir | None = None) -> tuple[list[Message], list[str]]:
    ok, failures = [], []
    for msg in replies:
        if msg.has_error():
            failures.append(f"node {msg.metadata.src_node_id}: {_short(msg.error.reason)}")
        else:
            ok.append(msg)
            if run is not None and "metrics" in msg.content and "partition-id" in msg.content["metrics"]:
                index = int(msg.content["metrics"]["partition-id"])
                if 0 <= index < len(run.round_shops):
                    _node_names[int(msg.metadata.src_node_id)] = run.round_shops[index]
    return ok, _name_failures(failures, _node_names)


def _per_shop(run: RunDir, replies: list[Message]) -> dict[str, dict[str, float]]:
    names = run.round_shops
    out = {}
    for msg in replies:
        metrics = dict(msg.content["metrics"])
        shop = names[int(metrics.pop("partition-id"))]
        out[shop] = {k: float(v) for k, v in metrics.items()}
    return out


def round_train_config(cfg: Any) -> ConfigRecord:
    """What every shop is sent with each round's training message, besides the weights: the
    configured strategy's shop-side settings (:attr:`StrategySpec.train_config`, e.g. FedProx's
    ``proximal-mu``)."""
    from fedgraph.federation.strategies import STRATEGIES

    spec = STRATEGIES[cfg.federation.strategy]
    return ConfigRecord(dict(spec.train_config(cfg.federation)) if spec.train_config else {})


def aggregate_in_shop_order(strategy: Strategy, server_round: int, replies: list[Message]) -> tuple[ArrayRecord | None, Any]:
    """``strategy.aggregate_train`` over the replies sorted by shop (partition id), not by arrival:
    Flower adds the updates in the order it is given and float addition is not associative, so the
    arrival order (which thread finished first) changed the global weights in the last bits
    (about 6e-8) from run to run. Sorted, two runs with the same seed give the same model, unless
    noise comes from the CSPRNG (DP-SGD without ``privacy.deterministic_noise``, or
    ``privacy.client_dp``), which is not seeded by design."""

    return strategy.aggregate_train(server_round, sorted(replies, key=_shop_index))


def _check_enough(cfg: Any, server_round: int, trained: int, failures: list[str]) -> None:
    if trained < cfg.federation.min_train_shops:
        detail = "; ".join(failures) or "no replies before the timeout"
        raise RoundFailed(
            f"round {server_round}: {trained} shop(s) returned an update, fewer than "
            f"federation.min_train_shops={cfg.federation.min_train_shops} ({detail}). "
            f"The global model was not updated; fix the failing shops and resume the run."
        )


def _secure_step(
    grid: Grid, run: RunDir, server_round: int, arrays: ArrayRecord, train_config: ConfigRecord
) -> tuple[ArrayRecord, dict[str, dict[str, float]], list[str]]:
    """The training step under SecAgg+: the server only sees the sum of the shops' updates."""
    from fedgraph.federation.secure_aggregation import SecureAggregationHalted, secure_train_round

    try:
        new_arrays, shop_metrics, failures = secure_train_round(grid, run.config, server_round, arrays, dict(train_config))
    except SecureAggregationHalted as exc:
        raise RoundFailed(str(exc)) from exc
    failures = list(dict.fromkeys(_short(f) for f in failures))  # SecAgg+ reports a drop-out once per stage
    names = run.round_shops
    train = {}
    for metrics in shop_metrics:
        metrics = dict(metrics)
        train[names[int(metrics.pop("partition-id"))]] = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    _check_enough(run.config, server_round, len(train), failures)
    return new_arrays, train, failures


def _split_exhausted(run: RunDir, replies: list[Message]) -> tuple[list[Message], dict[str, dict[str, float]]]:
    """Separate the replies of shops that refused to train because of their privacy budget."""
    trained, exhausted = [], {}
    for msg in replies:
        metrics = msg.content["metrics"]
        if float(metrics.get("budget-exhausted", 0)) > 0:
            exhausted.update(_per_shop(run, [msg]))
        else:
            trained.append(msg)
    return trained, exhausted


def _ledger_regressions(history: dict[str, Any], reported: dict[str, dict[str, float]]) -> dict[str, str]:
    """Shops whose reported privacy ledger went backwards (shorter, or a smaller ε) against what the
    server recorded in earlier rounds: their ledger was rewritten, restored or deleted."""
    seen: dict[str, tuple[int, float, int]] = {}
    for r in history.get("rounds", []):
        for part in ("train", "budget_exhausted"):
            for shop, m in (r.get(part) or {}).items():
                if "ledger-seq" in m:
                    seq, eps = int(m["ledger-seq"]), float(m.get("epsilon", 0.0))
                    old = seen.get(shop, (-1, 0.0, 0))
                    seen[shop] = (max(old[0], seq), max(old[1], eps), int(r["round"]))
    out = {}
    for shop, m in reported.items():
        if shop in seen and "ledger-seq" in m:
            seq, eps, at = seen[shop]
            if int(m["ledger-seq"]) <= seq or float(m.get("epsilon", 0.0)) < eps - 1e-9:
                out[shop] = (
                    f"shop {shop}: its privacy ledger went backwards (now entry {int(m['ledger-seq'])}, ε {float(m.get('epsilon', 0)):.2f}; "
                    f"the server recorded entry {seq}, ε {eps:.2f} by round {at}): its update is refused until its operator "
                    "restores the ledger"
                )
    return out


def _budget_note(exhausted: dict[str, dict[str, float]]) -> str:
    def one(shop: str, m: dict[str, float]) -> str:
        target = m.get("target-epsilon", float("nan"))
        return f"{shop} (ε {m['epsilon']:.2f} of {target:g})" if "epsilon" in m else f"{shop} (target ε {target:g})"

    return ", ".join(one(shop, m) for shop, m in exhausted.items())


class TrainingReplies:
    """One training round's replies, taken in wave by wave and folded as they come.

    For every wave :meth:`add` keeps each shop's own figures (:attr:`train`; shops out of
    privacy budget in :attr:`exhausted`; failed shops and shops whose ledger went backwards in
    :attr:`failures`) and, in place of the wave's updates, one *pre-reduced* update: their
    weighted mean (Flower's ``aggregate_arrayrecords``, over the wave's replies sorted by shop)
    carrying the wave's summed weight. The strategy's ``aggregate_train`` over the pre-reduced
    updates is then the weighted mean over all shops (FedAvg's; FedAdam takes its server step
    once, on it), and the server holds one model-sized array per wave instead of one per shop
    (simulations/RESULTS.md, "Simulations past one machine"). One wave, as in a deployment, gives bit for
    bit the aggregate of the unfolded replies. Waves hold the same shops in every run
    (:func:`in_shop_order`), so a multi-wave run is repeatable too.

    Nothing is folded under client-level DP (``privacy.client_dp``): Flower's wrapper clips
    every shop's update before the mean, so it needs them one by one.
    """

    def __init__(self, run: RunDir, history: dict[str, Any], strategy: Strategy) -> None:
        self.run, self.history = run, history
        self.train: dict[str, dict[str, float]] = {}
        self.exhausted: dict[str, dict[str, float]] = {}
        self.failures: list[str] = []
        #: What the strategy aggregates: one pre-reduced update per wave (or every reply unfolded).
        self.updates: list[Message] = []
        folds = run.config.privacy.client_dp == "off"
        self._weight_key: str | None = getattr(strategy, "weighted_by_key", None) if folds else None

    def add(self, replies: Iterable[Message]) -> None:
        """Take in one wave's replies (in any order)."""
        run = self.run
        ok, failures = _split_replies(replies, run)
        ok, exhausted = _split_exhausted(run, ok)
        regressed = _ledger_regressions(self.history, _per_shop(run, ok)) if run.config.privacy.enabled else {}
        if regressed:
            ok = [m for m in ok if run.round_shops[int(m.content["metrics"]["partition-id"])] not in regressed]
        self.failures += failures + list(regressed.values())
        self.exhausted.update(exhausted)
        self.train.update(_per_shop(run, ok))
        if not ok:
            return
        if not self._weight_key:
            self.updates.extend(ok)
            return
        from flwr.serverapp.strategy.strategy_utils import validate_message_reply_consistency

        # The check Flower's aggregate_train makes of the shops' replies (one array record with the
        # same keys, the weight present), made here since it then sees only the pre-reduced ones.
        validate_message_reply_consistency([m.content for m in ok], self._weight_key, True)
        if sum(float(m.content["metrics"][self._weight_key]) for m in ok) > 0:  # weight 0: FedAvg ignores them
            self.updates.append(_pre_reduced(ok, self._weight_key))


def _pre_reduced(replies: list[Message], weight_key: str) -> Message:
    """The weighted mean of ``replies``' updates as one reply whose weight is their summed
    weight and whose partition id is their first shop's (so the waves stay in shop order)."""
    from flwr.app import MetricRecord, RecordDict
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

    replies = sorted(replies, key=_shop_index)
    contents = [m.content for m in replies]
    weight = sum(m.content["metrics"][weight_key] for m in replies)
    first = int(replies[0].content["metrics"]["partition-id"])
    mean = aggregate_arrayrecords(contents, weight_key)
    return Message(RecordDict({"arrays": mean, "metrics": MetricRecord({weight_key: weight, "partition-id": first})}), reply_to=replies[0])


def _shop_index(msg: Message) -> tuple[int, int]:
    metrics = msg.content["metrics"] if "metrics" in msg.content else {}
    return (int(metrics.get("partition-id", -1)), int(msg.metadata.src_node_id))


def in_shop_order(grid: Grid, messages: Iterable[Message]) -> list[Message]:
    """``messages`` sorted by their shop, in Flower's simulation engine: it registers the node of
    partition ``i`` as the ``i``-th node of its in-memory link state (``vce_api._register_nodes``;
    node ids are random), so that order is the shops' order and every run sends each wave to the
    same shops. Elsewhere (a deployment's grid, one wave) the order is left as it is."""
    messages = list(messages)
    nodes = getattr(getattr(grid, "state", None), "nodes", None)
    if not isinstance(nodes, dict):
        return messages
    rank = {node: i for i, node in enumerate(nodes)}
    return sorted(messages, key=lambda m: rank.get(m.metadata.dst_node_id, len(rank)))


def _mean(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return float(np.mean(values)) if values else float("nan")


def _validation(evals: dict[str, dict[str, float]], k: int) -> str:
    if not evals:
        return "validation figures stay in the shops (privacy.share_evaluation = false)"
    ndcg, recall = _mean([e[f"ndcg@{k}"] for e in evals.values()]), _mean([e[f"recall@{k}"] for e in evals.values()])
    return f"validation NDCG@{k} {ndcg:.4f} | Recall@{k} {recall:.4f} (macro over {plural(len(evals), 'shop')})"


def _in_simulation(grid: Grid) -> bool:
    """True for Flower's simulation engine (its in-memory grid), False for a deployment."""
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    return isinstance(grid, InMemoryGrid)


def _wave_size(grid: Grid, run: RunDir) -> int:
    """Shops asked at a time: ``federation.simulation_wave`` in Flower's simulation engine,
    everyone at once in a deployment."""
    return int(run.config.federation.simulation_wave) if _in_simulation(grid) else 0


def send_in_waves(
    grid: Grid, messages: Iterable[Message], *, timeout: float, wave: int, on_wave: Callable[[list[Message]], None] | None = None
) -> list[Message]:
    """``grid.send_and_receive`` over ``messages``, ``wave`` at a time (0: all at once).

    Returns every reply, or, with ``on_wave``, hands each wave's replies to it as they come and
    returns ``[]`` (so the caller can fold them and the replies are not all held at once).

    The round's ``timeout`` is shared by the waves. Flower's in-memory link state (simulation
    engine) scans every stored message whenever a shop polls for its own, so a round that asks
    a thousand shops at once spends most of the server's CPU on those scans (profile:
    simulations/RESULTS.md, 'Implementation measurements'); waves of a few dozen keep the scans short while
    every Ray worker stays busy. Messages a wave could not send before the deadline are
    answered by nobody and count as missing shops, as a timeout would.
    """
    messages = list(messages)
    replies: list[Message] = []
    take = on_wave or replies.extend
    if wave <= 0 or len(messages) <= wave:
        take(list(grid.send_and_receive(messages, timeout=timeout)))
        return replies
    deadline = time.monotonic() + timeout
    for start in range(0, len(messages), wave):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        take(list(grid.send_and_receive(messages[start : start + wave], timeout=left)))
    return replies


def wait_for_shops(grid: Grid, wanted: int, *, timeout: float, say: Callable[[str], None] | None = None, every_s: float = 15.0) -> int:
    """Wait (at most ``timeout`` seconds) until ``wanted`` shops are connected; returns how many are.

    Flower's strategies wait for ``min_available_nodes`` without a bound; the round loop asks
    them for no more than ``federation.min_train_shops`` and bounds the wait itself here, so a
    dead shop can neither block a round nor let it start with too few. ``say`` gets a line every
    ``every_s`` seconds while waiting.
    """
    deadline = time.monotonic() + max(0.0, timeout)
    next_line = time.monotonic() + every_s
    while (connected := len(list(grid.get_node_ids()))) < wanted and time.monotonic() < deadline:
        if say is not None and time.monotonic() >= next_line:
            say(f"{PREFIX} waiting for shops: {connected} of {wanted} connected ({deadline - time.monotonic():.0f} s left)")
            next_line += every_s
        time.sleep(min(1.0, every_s, max(0.05, deadline - time.monotonic())))
    return connected


def _shops_needed(run: RunDir) -> int:
    return min(run.config.federation.min_train_shops, len(run.round_shops))


def _enough_connected(grid: Grid, run: RunDir, server_round: int, what: str, say: Callable[[str], None] | None = None) -> None:
    """Raise :class:`RoundFailed` unless ``min_train_shops`` shops connect within the round's timeout."""
    needed, timeout = _shops_needed(run), run.config.federation.round_timeout_s
    connected = wait_for_shops(grid, needed, timeout=timeout, say=say)
    if connected < needed:
        raise RoundFailed(
            f"round {server_round}: {what}: {connected} shop(s) connected after {timeout:.0f} s (federation.round_timeout_s), "
            f"fewer than federation.min_train_shops={needed}. The global model was not updated; start the missing shops' "
            f"daemons (fedgraph client status shows which) and resume the run"
        )


def _evaluate(
    grid: Grid, strategy: Strategy, server_round: int, arrays: ArrayRecord, timeout: float, run: RunDir, wave: int
) -> tuple[dict, list[str]]:
    if not run.config.privacy.share_evaluation:  # the shops keep their figures (deployments' default)
        return {}, []
    needed = _shops_needed(run)
    if wait_for_shops(grid, needed, timeout=timeout) < needed:
        return {}, [f"evaluation skipped: fewer than federation.min_train_shops={needed} shops connected after {timeout:.0f} s"]
    messages = in_shop_order(grid, strategy.configure_evaluate(server_round, arrays, ConfigRecord(), grid))
    replies, failures = _split_replies(send_in_waves(grid, messages, timeout=timeout, wave=wave), run)
    return _per_shop(run, replies), failures


def federate_item_counts(grid: Grid, run: RunDir, *, timeout: float, say: Callable[[str], None] = print) -> None:
    """Federated EASE: ask every shop for its item co-occurrence counts, add them up and write the
    sum to ``run.path / "federated_counts.npz"`` (:mod:`fedgraph.federation.item_counts`)."""
    from flwr.app import MessageType, RecordDict

    from fedgraph.federation.item_counts import VIEWS, CountSum, save_counts

    began = time.perf_counter()
    nodes = list(grid.get_node_ids())
    messages = [Message(RecordDict({}), node, MessageType.QUERY) for node in nodes]
    replies, failures = _split_replies(send_in_waves(grid, messages, timeout=timeout, wave=_wave_size(grid, run)), run)
    sums = {view: CountSum() for view in VIEWS}
    for msg in replies:
        keys, counts = msg.content["keys"], msg.content["counts"].to_torch_state_dict()
        for view, total in sums.items():
            if f"{view}.keys" in keys:
                total.add(np.array(keys[f"{view}.keys"], dtype=str), *(counts[f"{view}.{p}"].numpy() for p in ("row", "col", "count")))
    if failures or len(replies) < len(run.round_shops):
        raise RoundFailed(
            f"federated item counts: {len(replies)} of {len(run.round_shops)} shops answered ({'; '.join(failures) or 'timeout'})"
        )
    totals = {view: total.total() for view, total in sums.items() if total.shops}
    save_counts(run.path / "federated_counts.npz", totals, shops=len(replies))
    vocab = len(totals["train"][0]) if "train" in totals else 0
    say(f"{PREFIX} federated item counts: {plural(len(replies), 'shop')}, {vocab:,} distinct items, {time.perf_counter() - began:.1f} s")


def run_rounds(grid: Grid, strategy: Strategy, run: RunDir, *, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the configured number of rounds, resuming after the last checkpoint."""
    cfg = run.config
    total = cfg.train.rounds
    timeout = cfg.federation.round_timeout_s
    wave = _wave_size(grid, run)
    if _in_simulation(grid):
        skip_idle_polls(grid.state)  # type: ignore[attr-defined]
    k = cfg.evaluation.k
    # Federated EASE's counts: simulations only so far (a deployment's shops would need the sum sent back).
    if (
        cfg.model.private_part(cfg.privacy) == "federated_ease"
        and _in_simulation(grid)
        and not (run.path / "federated_counts.npz").exists()
    ):
        federate_item_counts(grid, run, timeout=timeout, say=say)
    history = run.read_history()
    checkpoint = run.latest_checkpoint()
    # Before the first round of this server process (a fresh run or a resume), give the enrolled
    # shops a bounded time to (re)connect, so a restarted server does not start without them.
    shops = len(run.round_shops)
    connected = wait_for_shops(grid, shops, timeout=cfg.federation.start_wait_s, say=say)
    if connected < shops:
        say(
            f"{PREFIX} warning: {connected} of {shops} shops connected after {cfg.federation.start_wait_s:.0f} s "
            f"(federation.start_wait_s); going on, the others join the round after they connect"
        )
    if checkpoint is None:
        start = 0
        arrays = ArrayRecord(run.new_model().state_dict())
        history = {"rounds": []}
        evals, failures = _evaluate(grid, strategy, 0, arrays, timeout, run, wave)
        history["rounds"].append(
            {"round": 0, "eval": evals, "failures": failures, "model_version": state_digest(arrays.to_torch_state_dict())[:16]}
        )
        run.write_history(history)
        say(f"{PREFIX} round 0/{total} | initial model | {_validation(evals, k)}")
    else:
        start = int(checkpoint["round"])
        arrays = ArrayRecord(checkpoint["state_dict"])
        history["rounds"] = [r for r in history.get("rounds", []) if r["round"] <= start]
        say(f"{PREFIX} resuming after round {start}/{total} from {run.checkpoint_file(start).name}")
    server_ledger = ServerPrivacyLedger(run.server_privacy_dir, cfg, len(run.round_shops)) if cfg.privacy.client_dp != "off" else None
    train_config = round_train_config(cfg)

    for server_round in range(start + 1, total + 1):
        began = time.perf_counter()
        if cfg.privacy.secure_aggregation:
            _enough_connected(grid, run, server_round, "secure aggregation", say)
            new_arrays, train, failures = _secure_step(grid, run, server_round, arrays, train_config)
            regressed = _ledger_regressions(history, train) if cfg.privacy.enabled else {}
            if regressed:  # its masked update is already in the sum: the round cannot use it
                raise RoundFailed(f"round {server_round}: " + "; ".join(regressed.values()) + "; the global model was not updated")
            arrays = new_arrays
            exhausted: dict[str, dict[str, float]] = {}
        else:
            _enough_connected(grid, run, server_round, "training", say)
            messages = in_shop_order(grid, strategy.configure_train(server_round, arrays, train_config, grid))
            collected = TrainingReplies(run, history, strategy)
            send_in_waves(grid, messages, timeout=timeout, wave=wave, on_wave=collected.add)
            train, exhausted, failures = collected.train, collected.exhausted, collected.failures
            if exhausted and not train and not failures:
                say(
                    f"{PREFIX} round {server_round}/{total} | every shop has spent its privacy budget "
                    f"({_budget_note(exhausted)}); training stops after round {server_round - 1}"
                )
                history["stopped"] = {"round": server_round, "reason": "privacy budget exhausted", "shops": exhausted}
                run.write_history(history)
                break
            _check_enough(cfg, server_round, len(train), failures)
            new_arrays, _ = aggregate_in_shop_order(strategy, server_round, collected.updates)
            if new_arrays is None:
                raise RoundFailed(f"round {server_round}: aggregation produced no model; the global model was not updated")
            arrays = new_arrays
        state = arrays.to_torch_state_dict()
        version = state_digest(state)[:16]
        client_dp = None
        if server_ledger is not None:
            entry = server_ledger.record_round(server_round, version, len(train), float(getattr(strategy, "clipping_norm", 0.0)))
            client_dp = {k: entry[k] for k in ("epsilon", "delta", "noise_multiplier", "clipping_norm", "releases")}
        evals, eval_failures = _evaluate(grid, strategy, server_round, arrays, timeout, run, wave)
        seconds = time.perf_counter() - began
        history["rounds"].append(
            {
                "round": server_round,
                "seconds": seconds,
                "model_version": version,
                "train": train,
                "eval": evals,
                "failures": failures + eval_failures,
                "budget_exhausted": exhausted,
                "client_dp": client_dp,
            }
        )
        # Checkpoint first, then history: a crash in between re-runs nothing and loses nothing.
        run.save_checkpoint(server_round, state, {"model_version": version})
        run.write_history(history)
        loss = _mean([t.get("train_loss", float("nan")) for t in train.values()])
        say(
            f"{PREFIX} round {server_round}/{total} | shops {len(train)}/{len(train) + len(failures)} | "
            + ("secure aggregation (SecAgg+) | " if cfg.privacy.secure_aggregation else "")
            + (f"loss {loss:.4f} | " if loss == loss else "loss stays in the shops | ")
            + f"{_validation(evals, k)} | {seconds:.1f} s"
            + (
                f" | ε ≤ {max(t['epsilon'] for t in train.values()):.2f} (max over shops, δ per shop)"
                if any("epsilon" in t for t in train.values())
                else ""
            )
            + (f" | client-level ε {client_dp['epsilon']:.2f} (δ {client_dp['delta']:g}, unit: one shop)" if client_dp else "")
            + (f" | {len(failures)} shop(s) failed: {failures[0]}" if failures else "")
            + (f" | out of privacy budget, not trained: {_budget_note(exhausted)}" if exhausted else "")
        )
    return history

"""A federated simulation, end to end: data → features → Flower rounds → baselines → graphs → report.

:func:`simulate` is what ``fedgraph simulate`` runs. Each stage writes its result into the
run directory atomically, and a stage whose result is already there is skipped, so a run
that was stopped (Ctrl-C, crash, a failed round) resumes with ``fedgraph simulate --resume
RUN_DIR`` from where it stopped: prepared data, finished rounds (checkpoints) and finished
baselines are reused.
"""

from __future__ import annotations

import json
import platform
import resource
import sys
import time
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fedgraph.atomic import atomic_write_json
from fedgraph.config import ConfigError, RunConfig
from fedgraph.console import plural, strip_ansi
from fedgraph.data.sources import Dataset, load_dataset
from fedgraph.features import pipeline
from fedgraph.federation.run_dir import RunDir, state_digest
from fedgraph.shop import ShopData

Say = Callable[[str], None]


def check_before_work(config: RunConfig, dataset: Dataset) -> None:
    """Refuse a run that cannot succeed on this machine and data before anything is written.

    Raises:
        ConfigError: ``train.device`` is not present here, or the data has fewer shops than
            ``federation.min_train_shops`` (no round could ever succeed).
    """
    from fedgraph.config import ConfigError, check_device

    check_device(config.train.device)
    shops = int(dataset.catalog["shop"].nunique())
    needed = config.federation.min_train_shops
    if shops < needed:
        raise ConfigError(
            f"the data has {shops} shop{'s' if shops != 1 else ''} but federation.min_train_shops={needed}, so no round could "
            f"succeed; set federation.min_train_shops={max(shops, 1)} (or fewer), or add shops to the data"
        )


def prepare(config: RunConfig, run: RunDir, say: Say = print, *, dataset: Dataset | None = None) -> list[str]:
    """Load (unless ``dataset`` is given, already loaded and validated), split, embed and save
    every shop's :class:`ShopData`; returns the shop names."""
    started = time.perf_counter()
    dataset = dataset if dataset is not None else load_dataset(config)
    d = config.data
    train, test = pipeline.split_events(dataset.events, config)
    # Validation: the same cut applied again inside the training period (each user's latest
    # items before the test items). Every choice is made on it; test figures are computed once.
    fit, val = pipeline.split_events(train, config)
    catalog = dataset.catalog.reset_index(drop=True)
    say(
        f"data: {len(dataset.events):,} events, {plural(catalog['shop'].nunique(), 'shop')}, {len(catalog):,} catalog rows "
        f"({len(fit):,} train / {len(val):,} validation / {len(test):,} test events) in {time.perf_counter() - started:.1f} s"
    )
    text, st = pipeline.text_vectors(catalog, config)
    say(
        f"text features: {len(catalog):,} items ({st.hits:,} from the cache, {st.embedded:,} embedded"
        f"{', model loaded' if st.model_loads else ''})"
    )
    # Searches: the test view uses those before each user's test period, the training view
    # those before its validation period too; embedded once (the training view's are a subset).
    searches = dataset.searches.reset_index(drop=True)
    most = config.model.search_queries
    final_rows = pipeline.latest_queries(searches, pipeline.before_held_out(searches, test), most)
    fit_rows = pipeline.latest_queries(searches, pipeline.before_held_out(searches, val, test), most)
    needed = np.union1d(final_rows, fit_rows)
    needed_vectors = pipeline.query_vectors(searches.iloc[needed], config)
    final_searches, final_vectors = searches.iloc[final_rows].reset_index(drop=True), needed_vectors[np.searchsorted(needed, final_rows)]
    fit_searches, fit_vectors = searches.iloc[fit_rows].reset_index(drop=True), needed_vectors[np.searchsorted(needed, fit_rows)]
    if len(searches):
        say(
            f"searches: {len(searches):,}, of which {len(needed):,} embedded (not cached): each customer's latest {most} "
            f"before validation ({len(fit_rows):,}) and before test ({len(final_rows):,})"
        )
    # Order shops by size (largest first) so partition ids are stable and readable.
    users_per_shop = dataset.events.groupby("shop")["user"].nunique()
    shops = sorted(users_per_shop.index, key=lambda s: (-int(users_per_shop[s]), s))
    summary = []
    rows_of_shop = catalog.groupby("shop", sort=False).indices  # one pass, not one mask per shop
    # Events too: one groupby instead of a mask over every event per shop (that was
    # quadratic: 1,000 shops x 3.4M events). build_shop_data gets the shop's own rows, in
    # their original order, so its result is unchanged.
    no_rows = np.zeros(0, dtype=np.int64)
    parts = {
        name: (frame, frame.groupby("shop", sort=False).indices)
        for name, frame in (("train", train), ("test", test), ("fit", fit), ("val", val))
    }

    def rows(name: str, shop: str) -> pd.DataFrame:
        frame, index = parts[name]
        return frame.iloc[index.get(shop, no_rows)]

    queries = {
        name: (frame, vectors, frame.groupby("shop", sort=False).indices)
        for name, frame, vectors in (("final", final_searches, final_vectors), ("fit", fit_searches, fit_vectors))
    }

    def searched(name: str, shop: str) -> dict[str, Any]:
        frame, vectors, index = queries[name]
        at = index.get(shop, no_rows)
        return {"searches": frame.iloc[at], "search_vectors": vectors[at]}

    for shop in shops:
        shop_catalog = catalog.iloc[rows_of_shop[shop]]
        feats = pipeline.shop_item_features(text[rows_of_shop[shop]], shop_catalog["price"].to_numpy(), config)
        final = pipeline.shop_data(shop, rows("train", shop), rows("test", shop), shop_catalog, feats, config, **searched("final", shop))
        data = pipeline.shop_data(shop, rows("fit", shop), rows("val", shop), shop_catalog, feats, config, **searched("fit", shop))
        final.save(run.final_shop_file(shop))  # first: shop_file's presence marks the shop as prepared
        data.save(run.shop_file(shop))
        # users, items, interactions: of the data trained on (run.shop_file); evaluable users: of the test split
        summary.append(
            {
                "shop": shop,
                "users": data.num_users,
                "items": data.num_items,
                "interactions": data.num_interactions,
                "evaluable_users": int(len(final.evaluable_users())),
                "validation_users": int(len(data.evaluable_users())),
                "trainable_users": int(len(data.trainable_users())),
                "history_interactions": final.num_interactions,
            }
        )
    for split, key in (("validation", "validation_users"), ("test", "evaluable_users")):
        if not any(s[key] for s in summary):
            raise ConfigError(
                f"no customer in any shop has both training and {split} events, so nothing can be {'chosen' if split == 'validation' else 'tested'}: "
                f"a customer needs data.min_user_items={d.min_user_items} distinct items for the test split and as many again, after it, for "
                f"validation; lower data.min_user_items or data.test_fraction={d.test_fraction:g}, or add data"
            )
    round_shops = [s["shop"] for s in summary if s["trainable_users"] > 0]
    _warn_about_small_shops(summary, say)
    if len(round_shops) < min(config.federation.min_train_shops, len(shops)) or not round_shops:
        raise ConfigError(
            f"only {plural(len(round_shops), 'shop')} of {len(shops)} can train (a shop trains when a customer has two or "
            f"more distinct training items), fewer than federation.min_train_shops={config.federation.min_train_shops}; lower it or add data"
        )
    if config.privacy.secure_aggregation:  # SecAgg+ runs over the shops in the rounds
        from fedgraph.federation.secure_aggregation import check_settings

        try:
            check_settings(config, len(round_shops))
        except ConfigError as exc:
            raise ConfigError(f"{plural(len(round_shops), 'shop')} of {len(shops)} can train and would be in the rounds: {exc}") from exc
    index = {"shops": list(shops), "round_shops": round_shops, **pipeline.index_entries(config)}
    atomic_write_json(run.shops_dir / "index.json", {**index, "dataset": dataset.description, "summary": summary})
    say(f"prepared {plural(len(shops), 'shop')} in {time.perf_counter() - started:.1f} s")
    return list(shops)


def _names(shops: list[str], most: int = 8) -> str:
    return ", ".join(shops[:most]) + (f" and {len(shops) - most:,} more" if len(shops) > most else "")


def _warn_about_small_shops(summary: list[dict[str, Any]], say: Say) -> None:
    """Say which shops cannot train (no customer with two distinct training items: they are left
    out of the rounds), which have no test figure, and which have no validation figure (the
    rounds and the choices made on validation are not scored on their data)."""
    idle = [s["shop"] for s in summary if s["trainable_users"] == 0]
    if idle:
        say(
            f"warning: {plural(len(idle), 'shop')} cannot train (no customer with two or more distinct training items) and "
            f"{'is' if len(idle) == 1 else 'are'} left out of the federated rounds; still evaluated with the global model: {_names(idle)}"
        )
    no_test = [s["shop"] for s in summary if s["evaluable_users"] == 0]
    if no_test:
        say(
            f"warning: {plural(len(no_test), 'shop')} with no test figure (no customer with both training and test items): {_names(no_test)}"
        )
    no_validation = [s["shop"] for s in summary if s["validation_users"] == 0 and s["shop"] not in no_test]
    if no_validation:
        say(
            f"warning: {plural(len(no_validation), 'shop')} with no validation figure (no customer with both training and validation "
            f"items): the kept round and the blend are chosen without their data: {_names(no_validation)}"
        )


def load_shops(run: RunDir, *, final: bool = False) -> list[ShopData]:
    """Every shop's training data (held-out = validation), or with ``final`` its test view."""
    return [ShopData.load(run.final_shop_file(s) if final else run.shop_file(s)) for s in run.shop_names]


def run_baselines(run: RunDir, say: Say = print) -> dict[str, dict[str, dict]]:
    """Compute (or reuse) every configured baseline (:mod:`fedgraph.baselines`); one JSON file
    per method. A ``dp_only`` baseline (``ease_dp``) runs only under ``privacy.enabled``."""
    from fedgraph.baselines import BASELINES, BaselineContext, check_names
    from fedgraph.training import resolve_device

    cfg = run.config
    check_names(cfg.evaluation.baselines)
    context = BaselineContext(run, load_shops(run), load_shops(run, final=True), resolve_device(cfg.train.device), say)
    results = {}
    for method in cfg.evaluation.baselines:
        if BASELINES[method].dp_only and not cfg.privacy.enabled:
            continue
        path = run.baselines_dir / f"{method}.json"
        if path.exists():
            results[method] = json.loads(path.read_text())["per_shop"]
            say(f"baseline {method}: reused {path.name}")
            continue
        started = time.perf_counter()
        per_shop = BASELINES[method].run(context)
        seconds = time.perf_counter() - started
        atomic_write_json(path, {"method": method, "seconds": seconds, "per_shop": per_shop})
        results[method] = per_shop
        say(f"baseline {method}: done in {seconds:.1f} s")
    return results


def federated_results(run: RunDir) -> dict[str, dict]:
    """Check that federated training finished and that its last checkpoint is intact; returns the
    last round's per-shop (validation) figures."""
    history = run.read_history()
    rounds = history["rounds"]
    if not rounds or (rounds[-1]["round"] != run.config.train.rounds and "stopped" not in history):
        done = rounds[-1]["round"] if rounds else 0
        raise RuntimeError(
            f"federated training did not finish ({done} of {run.config.train.rounds} rounds); see flower.log in the run directory, then resume the run"
        )
    run.latest_checkpoint()  # a damaged last checkpoint is reported (with how to recover) before anything uses the run
    return {shop: {k: v for k, v in m.items() if k != "num-examples"} for shop, m in rounds[-1]["eval"].items()}


def build_graphs(run: RunDir, selection: dict[str, Any], say: Say = print) -> dict[str, Any]:
    """Rebuild every shop's interest graph into ``graph.sqlite`` from the global model of the round
    kept on validation, over the shop's whole training history; with the hybrid, recommendations
    are the blend with the shop's own EASE (λ and α as chosen on validation)."""
    from fedgraph.evaluation import item_embeddings, user_embeddings
    from fedgraph.federation.shop_side import model_for_shop
    from fedgraph.graph import build_interest_graph
    from fedgraph.graph.stores import open_store
    from fedgraph.models.hybrid import blend
    from fedgraph.selection import PrivateCandidates
    from fedgraph.training import resolve_device

    cfg = run.config
    device = resolve_device(cfg.train.device)
    kept = int(selection["round"])
    state = run.load_checkpoint(kept)["state_dict"] if kept > 0 else run.new_model().state_dict()
    version = state_digest(state)[:16]
    store = open_store(cfg, run.path, create=True)
    sizes = {}
    candidates = PrivateCandidates(run, "final", selection.get("private_part", "none"))
    for shop in load_shops(run, final=True):
        started = time.perf_counter()
        model = model_for_shop(run, shop, state, server_round=kept)  # global weights + the shop's private part
        users = np.arange(shop.num_users)
        items = item_embeddings(model, shop, device)
        user_emb = user_embeddings(model, shop, users, history=cfg.evaluation.history, items=items, device=device)
        rescore = None
        choice = selection.get("per_shop", {}).get(shop.shop)
        if choice is not None:
            private = candidates.scores(choice["gram"], choice["l2"], shop, users)

            def rescore(start: int, stop: int, scores: torch.Tensor, private=private, alpha=choice["alpha"]) -> torch.Tensor:
                return blend(scores.cpu(), private[start:stop], alpha)

        # Scores are z_u . e_i / tau + b_i (exactly the evaluation's ranking): the builder
        # gets the unit item vectors (for similarities and interests) and the bias apart.
        graph = build_interest_graph(
            shop.shop,
            list(shop.users),
            (user_emb / model.temperature).cpu().numpy(),
            list(shop.items),
            items[:, :-1].cpu().numpy(),
            list(shop.item_titles),
            list(shop.item_categories),
            exclude=[shop.history(u) for u in users],
            item_bias=items[:, -1].cpu().numpy(),
            top_k_items=cfg.graph.top_k_items,
            top_k_interests=cfg.graph.top_k_interests,
            top_k_neighbours=cfg.graph.top_k_neighbours,
            model_version=version,
            round=kept,
            device=device,
            rescore=rescore,
        )
        store.write(graph)
        sizes[shop.shop] = store.summary(shop.shop)
        say(f"graph {shop.shop}: {shop.num_users} users, {shop.num_items} items in {time.perf_counter() - started:.1f} s")
    store.close()
    return sizes


def _record_provenance(run: RunDir) -> None:
    """``run.json``: who started the run, where, when, and the SHA-256 of its config.toml (for audits)."""
    import getpass
    import hashlib
    import socket
    from datetime import datetime

    from fedgraph import version

    fedgraph_version = version()
    atomic_write_json(
        run.path / "run.json",
        {
            "config_sha256": hashlib.sha256(run.config_file.read_bytes()).hexdigest(),
            "user": getpass.getuser(),
            "host": socket.gethostname(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
            "fedgraph": fedgraph_version,
            "python": sys.version.split()[0],
        },
    )


def _peak_rss_mb() -> dict[str, float]:
    kb_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kb_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"main_process_mb": kb_self / 1024, "largest_child_process_mb": kb_children / 1024}


def simulate(config: RunConfig | None, out_dir: str | Path, *, resume: bool = False, say: Say = print) -> dict[str, Any]:
    """Run (or resume) a whole simulation into ``out_dir``; returns the metrics document."""
    from fedgraph.report import write_report
    from fedgraph.runtime.simulation_engine import run_flower_simulation
    from fedgraph.selection import select_and_test

    started = time.perf_counter()
    out_dir = Path(out_dir)
    dataset = None  # loaded and validated before the run directory exists (new runs); prepare loads it on resume
    if resume:
        run = RunDir.at(out_dir)
        config = run.config
        from fedgraph.config import check_device

        check_device(config.train.device)
        say(f"resuming run {run.path}")
    else:
        if out_dir.exists() and any(out_dir.iterdir()):
            raise FileExistsError(f"{out_dir} already holds files; pick a new --out, or resume it with --resume {out_dir}")
        assert config is not None
        from fedgraph.baselines import check_names

        check_names(config.evaluation.baselines)
        # Everything that can be checked is checked before the run directory exists, so a bad
        # value or data file leaves nothing behind and the same command can simply be retried.
        dataset = load_dataset(config)
        check_before_work(config, dataset)
        out_dir.mkdir(parents=True, exist_ok=True)
        config.save(out_dir / "config.toml")
        run = RunDir.at(out_dir)
        _record_provenance(run)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    if not (run.shops_dir / "index.json").exists():
        try:
            prepare(config, run, say, dataset=dataset)
        except ConfigError:
            if dataset is not None:  # a new run: leave the directory as empty as it was, so the retry works
                _empty(out_dir)
            raise
    timings["prepare_s"] = time.perf_counter() - t

    t = time.perf_counter()
    history = run.read_history()
    if not history.get("rounds") or (history["rounds"][-1]["round"] < config.train.rounds and "stopped" not in history):
        fed = config.federation
        if fed.ray_address:
            from fedgraph.runtime.ray_cluster import check_cluster

            nodes = check_cluster(fed.ray_address, run.path)
            say(f"Ray cluster at {fed.ray_address}: {plural(len(nodes), 'node')}, every one sees {run.path}")
        say(
            f"federated training: {plural(len(run.round_shops), 'shop')}, {plural(config.train.rounds, 'round')}, {fed.strategy} (Flower simulation engine)"
        )
        run_flower_simulation(
            run.path,
            num_shops=len(run.round_shops),
            cpus_per_shop=fed.cpus_per_shop,
            gpus_per_shop=fed.gpus_per_shop,
            total_cpus=fed.total_cpus,
            on_line=lambda line: _forward_flower_line(line, say),
            secure_aggregation=config.privacy.secure_aggregation,
            ray_address=fed.ray_address,
        )
    federated_results(run)  # raises unless training finished
    timings["federated_s"] = time.perf_counter() - t

    t = time.perf_counter()
    results = run_baselines(run, say)
    timings["baselines_s"] = time.perf_counter() - t

    t = time.perf_counter()
    own_l2 = {shop: float(r["setting"]) for shop, r in results.get("ease", {}).items()}
    selection = select_and_test(run, private_part=config.model.private_part(config.privacy), own_l2=own_l2, say=say)
    timings["selection_s"] = time.perf_counter() - t
    results["federated"] = selection["federated"]
    if selection["hybrid"]:
        results["hybrid"] = selection["hybrid"]

    t = time.perf_counter()
    graphs = build_graphs(run, selection, say)
    timings["graphs_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - started
    environment = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "device": str(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else "cpu",
        **_peak_rss_mb(),
    }
    return write_report(run, results, selection=selection, timings=timings, environment=environment, graphs=graphs, say=say)


def _empty(folder: Path) -> None:
    import shutil

    for child in folder.iterdir():
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


def _forward_flower_line(line: str, say: Say) -> None:
    """Show our progress lines and Flower's problems; the full log is in flower.log."""
    line = strip_ansi(line)
    if "[fedgraph]" in line:
        say(line[line.index("[fedgraph]") + len("[fedgraph] ") :])
    elif any(tag in line for tag in ("ERROR", "Traceback", "Error:", "RoundFailed")):
        say(f"flower: {line.strip()}")

"""Forget a customer (the right to erasure) in a shop's state directory.

:func:`forget_customer` removes one customer from everything the shop daemon keeps
(``STATE_DIR`` layout in :mod:`fedgraph.deploy.shop_state`), while the daemon is stopped (it
holds the directory while it runs, :meth:`fedgraph.deploy.paths.ShopPaths.exclusive`):

* ``events.sqlite``: every event of theirs, and bad-row reasons naming them; the customer is
  remembered only as a keyed digest with the request time, so their older events are refused
  if an export delivers them again (:meth:`fedgraph.deploy.ingest.EventLog.forget_user`);
* ``graph.sqlite``: their user node and every edge from it
  (:meth:`fedgraph.graph.GraphStore.forget_user`);
* ``run/shops/<shop>.npz``: the training data, rebuilt from the remaining events, so no later
  round trains on them;
* the drop folder's ``processed/`` files (and already-ingested files still in the folder):
  rewritten without their rows;
* ``logs/``, status and other text files: their id replaced by ``<forgotten>``.

Both SQLite files are rewritten after the deletes (``secure_delete``, ``VACUUM``, WAL
truncated), so the removed rows are gone from the bytes on disk. Last, every file of the state
directory and the drop folder is searched for the id (:func:`files_naming`); a file that still
names the customer (a quarantined file that could not be parsed, say) is reported by name, never
silently kept. The request is logged (``customer_forgotten``) with a request id and counts, never
the customer's id.

What this cannot undo: the models already trained. The global model and the shop's private
model part were trained with the customer's data; their influence is bounded by the DP
guarantee when ``privacy.enabled`` was on, and is not bounded at all without DP (PRIVACY.md).
"""

from __future__ import annotations

import json
from pathlib import Path

from fedgraph.deploy.paths import ShopPaths
from fedgraph.deploy.settings import ShopConfig
from fedgraph.privacy.erasure import (
    NOT_UNDONE,
    TEXT_SUFFIXES,
    ForgetError,
    ForgetReport,
    all_files,
    check_user,
    files_naming,
    is_drop_file,
    names_customer,
    redact_text,
    rewrite_without,
)

__all__ = ["ForgetError", "ForgetReport", "forget_customer", "render", "to_json"]


def _drop_folders(cfg: ShopConfig) -> list[Path]:
    if cfg.source.kind != "folder":
        return []
    folder = cfg.resolve(cfg.source.path)
    return [folder, folder / "processed", folder / "quarantine"]


def forget_customer(cfg: ShopConfig, user: str) -> ForgetReport:
    """Erase ``user`` from the shop's state (see module docs); the daemon must be stopped.

    Returns:
        ForgetReport: counts, files rewritten, and ``left``: files still naming the customer.

    Raises:
        ForgetError: an empty id or no state directory.
        fedgraph.deploy.paths.StateDirBusy: the shop daemon is running on this state directory.
    """
    from fedgraph.deploy.ingest import EventLog, file_sha256
    from fedgraph.deploy.logs import setup_logging
    from fedgraph.deploy.shop_state import DATA_OFFSET_KEY, load_catalog_features, refresh_training_data
    from fedgraph.federation.run_dir import RunDir
    from fedgraph.graph.stores import open_store

    user = check_user(user)
    paths = ShopPaths(cfg.state_dir)
    if not paths.events.exists():
        raise ForgetError(f"no shop state at {paths.root} (no events.sqlite); check [shop] state_dir in {cfg.path}")
    report = ForgetReport()
    with paths.exclusive("fedgraph client forget"):
        config = cfg.run_config()
        events = EventLog(paths.events)
        try:
            report.events = events.forget_user(user)
            if paths.graph.exists():
                store = open_store(config, paths.root, create=False)
                try:
                    report.graph_rows = store.forget_user(cfg.shop.name, user)
                finally:
                    store.close()
            target = RunDir.at(paths.run).shop_file(cfg.shop.name)
            if target.exists():
                events.set_offset(DATA_OFFSET_KEY, -1)
                if events.count() == events.search_count():  # no interaction left (searches alone cannot train)
                    target.unlink()
                    report.training_data = "removed (no events left)"
                else:
                    catalog = load_catalog_features(cfg.resolve(cfg.source.catalog), cfg.shop.name, config, paths.items)
                    refresh_training_data(paths, catalog, config, events)
                    report.training_data = "rebuilt without the customer"
            for folder in _drop_folders(cfg):
                if not folder.is_dir():
                    continue
                if folder.name == "quarantine":
                    continue  # not parsable as events: the sweep below reports such a file if it names the customer
                for path in sorted(p for p in folder.iterdir() if p.is_file() and is_drop_file(p)):
                    ingested = folder.name == "processed" or events.source_status(file_sha256(path)) == "ingested"
                    if not ingested:
                        if names_customer(path, user):
                            report.drop_files_pending.append(str(path))  # their events dated before now are refused at ingest
                        continue
                    try:
                        if rewrite_without(path, user):
                            report.drop_files_rewritten.append(str(path))
                    except Exception:  # noqa: BLE001 - an unparsable file is left for the sweep to report
                        pass
        finally:
            events.close()
        for path in all_files([paths.root]):
            if path.suffix in TEXT_SUFFIXES and redact_text(path, user):
                report.text_files_redacted.append(str(path))
        pending = {Path(p) for p in report.drop_files_pending}
        report.left = [str(p) for p in files_naming([paths.root, *_drop_folders(cfg)], user) if p not in pending]
        log = setup_logging(f"fedgraph.forget.{cfg.shop.name}", paths.log, cfg.daemon.log_level, stderr=False)
        log.info(
            "customer_forgotten",
            f"erasure request {report.request}: {report.events} events and {report.graph_rows} graph rows removed, "
            f"training data {report.training_data}, {len(report.drop_files_rewritten)} drop files rewritten, "
            f"{len(report.left)} files still naming the customer",
            request=report.request,
            events=report.events,
            graph_rows=report.graph_rows,
            drop_files_rewritten=len(report.drop_files_rewritten),
            files_left=len(report.left),
        )
        log.close()
    return report


def render(report: ForgetReport) -> str:
    """The report for a person: what was removed, and what still needs them."""
    lines = [
        f"erasure request {report.request}:",
        f"  events removed: {report.events}",
        f"  graph rows removed: {report.graph_rows}",
        f"  training data: {report.training_data}",
        f"  drop files rewritten without the customer: {len(report.drop_files_rewritten)}",
        f"  text files redacted (logs, status): {len(report.text_files_redacted)}",
    ]
    if report.drop_files_pending:
        lines.append(
            f"  not yet ingested, still naming the customer (their events dated before now will be refused): "
            f"{', '.join(report.drop_files_pending)}"
        )
    if report.left:
        lines.append("  STILL NAMING THE CUSTOMER (remove their rows by hand, or delete the files): " + ", ".join(report.left))
    else:
        lines.append("  no file of the state directory or the drop folder names the customer any more")
    lines.append(f"  not undone: {NOT_UNDONE}; see PRIVACY.md, 'Forgetting a customer'")
    return "\n".join(lines)


def to_json(report: ForgetReport) -> str:
    return json.dumps(report.as_dict(), indent=2)

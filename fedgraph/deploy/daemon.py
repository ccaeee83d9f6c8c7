"""The shop daemon (``fedgraph client start --config shop.toml``).

One process per shop that, until stopped (SIGTERM/Ctrl-C):

* runs a Flower SuperNode connected to the federation's SuperLink (TLS + SuperNode
  authentication), restarting it if it exits, and -- with ``daemon.isolation = "warm"`` -- executes
  the shop's ClientApp messages in a warm in-process worker (:mod:`fedgraph.deploy.warm`);
* ingests new events from the drop folder or SQLite table, exactly once (:mod:`fedgraph.deploy.ingest`);
* keeps the shop's interest graph current between rounds (:class:`fedgraph.deploy.shop_state.GraphUpdater`);
* writes ``STATE_DIR/status.json`` (read by ``fedgraph client status``) and JSON-lines logs.

Crash safety: everything the daemon needs to resume is in ``STATE_DIR`` and written atomically
(SQLite transactions, atomic file replacement), so ``kill -9`` and a restart lose nothing and count
nothing twice.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from fedgraph.console import strip_ansi
from fedgraph.deploy.logs import EventLogger, adopt, setup_logging
from fedgraph.deploy.settings import ShopConfig
from fedgraph.runtime import processes

REFUSED_BACKOFF_S = 30.0
#: Failed connection attempts in a row, against a SuperLink whose port answers, after which an
#: insecure SuperNode is reported as talking plain gRPC to a TLS server.
FAILED_ATTEMPTS_REPORTED = 4
RECONNECT_GRACE_S = 10.0
#: SuperNode log lines that only appear while it exchanges messages with the SuperLink.
_TALKING_TO_SUPERLINK = ("Receiving:", "Received successfully", "Sending:", "is not in `RUNNING` status")


class SuperNodeSupervisor:
    """Runs ``flower-supernode`` for the shop, watches its output, restarts it when it exits."""

    def __init__(self, cfg: ShopConfig, home: Path, runtime_port: int, log: EventLogger, console: Path):
        self.cfg = cfg
        self.home = home
        self.runtime_port = runtime_port
        self.log = log
        self.console = console
        self.process: subprocess.Popen | None = None
        self.state = "starting"
        self.node_id: str | None = None
        self.detail = ""
        self.exit_code: int | None = None
        self.starts = 0
        self.connected_since: float | None = None
        self._next_start = 0.0
        self._up_since: float | None = None
        self._refusals = 0
        self._failed_attempts = 0
        #: Why the last SuperNode could not connect when it was not a refusal by the SuperLink.
        self._tls_failed = False
        self._started_at = 0.0
        self._lock = threading.Lock()
        #: Ids of messages the SuperNode dropped after creating their task (a run no longer running,
        #: after a SuperLink restart): the warm worker gives such a task up at once.
        self.ignored_messages: set[str] = set()

    def command(self) -> list[str]:
        c, s = self.cfg, self.cfg.server
        cmd = [processes.flower_bin("flower-supernode"), "--superlink", s.address]
        if s.insecure:
            cmd.append("--insecure")
        else:
            cmd += ["--root-certificates", str(c.resolve(s.ca_cert)), "--auth-supernode-private-key", str(c.resolve(s.auth_key))]
        cmd += [
            "--isolation",
            "process" if c.daemon.isolation == "warm" else "subprocess",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.runtime_port),
            "--node-config",
            f'shop-config="{c.path}"',
        ]
        return cmd

    def start(self) -> None:
        self.starts += 1
        self._started_at = time.time()
        self.exit_code = None
        self._failed_attempts = 0
        if self.state not in ("refused", "certificate not trusted"):  # stays so until it connects
            self.state = "connecting"
        env = processes.flower_env(self.home)
        # Output to a file, not a pipe: if the daemon is killed, the SuperNode must still be able to
        # log while it shuts down (a dead pipe would SIGPIPE it before it tells the SuperLink it leaves).
        self.console.parent.mkdir(parents=True, exist_ok=True)
        start = self.console.stat().st_size if self.console.exists() else 0
        # Through the guard: killed with the daemon, the SuperNode gets one SIGTERM, not one per daemon thread
        guarded = [sys.executable, "-m", "fedgraph.deploy.guard", *self.command()]
        self.process = processes.spawn(guarded, env=env, log_path=self.console)
        self._reader = threading.Thread(target=self._read, args=(self.process, start), name="supernode-output", daemon=True)
        self._reader.start()
        self.log.info(
            "supernode_started",
            f"SuperNode started (pid {self.process.pid}), connecting to {self.cfg.server.address}",
            pid=self.process.pid,
            superlink=self.cfg.server.address,
            isolation=self.cfg.daemon.isolation,
        )

    def _lines(self, process: subprocess.Popen, start: int):
        """Follow the SuperNode's console file from ``start`` until the process has exited."""
        with open(self.console, "rb") as f:
            f.seek(start)
            pending = b""
            while True:
                chunk = f.readline()
                if chunk:
                    pending += chunk
                    if pending.endswith(b"\n"):
                        yield pending
                        pending = b""
                    continue
                if process.poll() is not None:
                    if pending:
                        yield pending
                    return
                time.sleep(0.1)

    def _read(self, process: subprocess.Popen, start: int) -> None:
        for raw in self._lines(process, start):
            line = strip_ansi(raw.decode("utf-8", "replace")).strip()
            m = re.search(r"SuperNode ID: (\d+)", line)
            if ignored := re.search(r"is not in `RUNNING` status\. Ignoring message ([0-9a-f]+)", line):
                self.ignored_messages.add(ignored.group(1))
            with self._lock:
                if m:
                    self.node_id, self.state, self.connected_since = m.group(1), "connected", time.time()
                    self._refusals = self._failed_attempts = 0
                    self._tls_failed = False
                    self.log.info("supernode_connected", f"connected to the SuperLink as node {self.node_id}", node_id=self.node_id)
                elif "Connection successful after" in line or (self.state != "connected" and any(s in line for s in _TALKING_TO_SUPERLINK)):
                    # Flower prints "Connection successful" on only some reconnect paths; a message
                    # received from the SuperLink also proves it (without this, the grace-period
                    # restart below killed a SuperNode that had reconnected and was mid-task).
                    self.state, self.connected_since = "connected", time.time()
                    self.log.info("supernode_reconnected", f"reconnected to the SuperLink: {line}")
                elif "CERTIFICATE_VERIFY_FAILED" in line or "SSL/TLS handshake error" in line:
                    self._tls_failed = True
                    self.detail = line if "CERTIFICATE_VERIFY_FAILED" in line else (self.detail or line)
                elif "Failed to activate SuperNode" in line or "Failed to initialize the connection" in line:
                    self.state = "refused"
                    if not self._tls_failed:
                        self.detail = line
                elif "[code:" in line and self.state == "refused":
                    self.detail += " " + line
                elif "Connection attempt failed" in line and self.state in ("connecting", "starting"):
                    self._failed_attempts += 1
                    if self._failed_attempts == FAILED_ATTEMPTS_REPORTED and self.cfg.server.insecure:
                        self.state = "cannot connect"
                        self.detail = line
                        self.log.error("supernode_cannot_connect", self._insecure_message(), attempts=self._failed_attempts)

    def _insecure_message(self) -> str:
        return (
            f"the SuperNode cannot connect to {self.cfg.server.address} ({self._failed_attempts} attempts failed): this shop "
            "has server.insecure = true (plain gRPC), and a federation server uses TLS by default. Set "
            f"server.insecure = false with server.ca_cert and server.auth_key in {self.cfg.path}, or ask the "
            "server operator whether the SuperLink really runs without TLS"
        )

    def _report_refusal(self, code: int, now: float) -> None:
        """Log why the SuperLink would not take this SuperNode (a certificate the shop's CA does not
        verify, or a shop it does not know) and back off before the next start."""
        retry = f"Retrying in {min(REFUSED_BACKOFF_S, 2.0 * 2**self._refusals):.0f} s."
        if self._tls_failed:
            self.state = "certificate not trusted"
            ca = self.cfg.resolve(self.cfg.server.ca_cert)
            self.log.error(
                "supernode_tls_failed",
                f"the SuperLink at {self.cfg.server.address} presented a certificate that server.ca_cert ({ca}) does not "
                f"verify ({self.detail.strip()}): this shop has the wrong CA certificate (CERTIFICATE_VERIFY_FAILED). Ask "
                "the server operator for the federation's ca.pem and point server.ca_cert at it, or check that "
                f"server.address names the federation's server. {retry}",
                exit_code=code,
                ca_cert=str(ca),
            )
            self._tls_failed = False
        else:
            self.state = "refused"
            self.log.error(
                "supernode_refused",
                f"the SuperLink at {self.cfg.server.address} refused this shop ({self.detail.strip() or f'exit code {code}'}). "
                f"Is shop {self.cfg.shop.name!r} enrolled? The server operator must list it in server.shops and restart "
                f"`fedgraph server start` (which enrols its public key). {retry}",
                exit_code=code,
            )
        self._refusals += 1
        self._next_start = now + min(REFUSED_BACKOFF_S, 2.0 * 2 ** (self._refusals - 1))

    def check(self, superlink_up: bool) -> None:
        """Start the SuperNode once the SuperLink answers, restart it if it exited, and restart it
        when the SuperLink is back but the SuperNode has not reconnected (Flower's retry back-off
        can leave it asleep for a minute)."""
        now = time.time()
        if not superlink_up:
            self._up_since = None
        elif self._up_since is None:
            self._up_since = now
        p = self.process
        if p is not None and p.poll() is not None:
            self._reader.join(timeout=5)  # it has seen every line the SuperNode wrote (e.g. why it was refused)
            self.exit_code = p.returncode
            refused = self.state == "refused" or p.returncode == 305
            self.process = None
            if refused:
                self._report_refusal(p.returncode, now)
            else:
                self.state = "stopped"
                self.log.warning("supernode_exited", f"SuperNode exited with code {p.returncode}; restarting", exit_code=p.returncode)
                self._next_start = now + self.cfg.daemon.restart_backoff_s
        if self.process is None:
            if now >= self._next_start and superlink_up:
                self.start()
            elif not superlink_up and self.state != "refused":
                self.state = "waiting for the SuperLink"
            return
        restart = False
        with self._lock:
            if self.state == "connected" and not superlink_up:
                self.state = "disconnected"
                self.log.warning(
                    "superlink_unreachable", f"SuperLink {self.cfg.server.address} is unreachable; the SuperNode keeps retrying"
                )
            elif (
                self.state in ("disconnected", "connecting")
                and self._up_since is not None
                and self._up_since > self._started_at
                and now - self._up_since > RECONNECT_GRACE_S
            ):
                self.log.info(
                    "supernode_restart",
                    f"the SuperLink answers again but the SuperNode has not reconnected in {RECONNECT_GRACE_S:.0f} s; "
                    "restarting it to reconnect now",
                )
                restart = True
        if restart:
            processes.stop(self.process)
            self.process = None
            self.start()

    def stop(self) -> None:
        processes.stop(self.process)
        self.process = None
        self.state = "stopped"

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "node_id": self.node_id,
            "pid": self.process.pid if self.process else None,
            "starts": self.starts,
            "last_exit_code": self.exit_code,
            "detail": self.detail.strip()[:300],
            "connected_since": self.connected_since,
        }


class ShopDaemon:
    def __init__(self, cfg: ShopConfig):
        from fedgraph.deploy.shop_state import ShopPaths

        self.cfg = cfg
        self.paths = ShopPaths(cfg.state_dir)
        self.stop_event = threading.Event()
        self.started_at = time.time()
        self.last_ingest: dict[str, Any] = {}
        self.last_graph: dict[str, Any] = {}
        self.tasks: list[dict[str, Any]] = []

    def request_stop(self, *_: Any) -> None:
        self.stop_event.set()

    def run(self) -> int:
        """Run until stopped, holding the state directory (a second daemon, or ``fedgraph client
        forget``, on the same directory is refused while this one runs)."""
        try:
            with self.paths.exclusive("the shop daemon"):
                return self._run()
        except Exception as exc:
            log = getattr(self, "log", None)
            if log is not None:
                log.error("daemon_failed", f"the daemon stopped on an error: {type(exc).__name__}: {exc}", exc_info=exc)
            raise

    def _run(self) -> int:
        from fedgraph.deploy.ingest import DropFolder, EventLog, SqliteTable
        from fedgraph.deploy.shop_state import GraphUpdater, atomic_status, load_catalog_features, write_run_dir

        cfg, paths = self.cfg, self.paths
        paths.root.mkdir(parents=True, exist_ok=True)
        log = setup_logging(f"fedgraph.daemon.{cfg.shop.name}", paths.log, cfg.daemon.log_level, stderr=cfg.daemon.log_stderr)
        self.log = log
        adopt("flwr", log, "error")  # the warm worker runs Flower code in this process
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        log.info(
            "daemon_starting",
            f"shop {cfg.shop.name}: daemon starting (pid {os.getpid()}), state in {paths.root}",
            pid=os.getpid(),
            state_dir=str(paths.root),
            config=str(cfg.path),
        )
        config = cfg.run_config()
        catalog = load_catalog_features(cfg.resolve(cfg.source.catalog), cfg.shop.name, config, paths.items, log=log)
        if not (paths.run / "shops" / "index.json").exists():
            write_run_dir(paths, config, [cfg.shop.name])
        events = EventLog(paths.events)
        items = set(catalog.items)
        if cfg.source.kind == "folder":
            source: Any = DropFolder(
                cfg.resolve(cfg.source.path), events, shop=cfg.shop.name, items=items, log=log, settle_s=cfg.source.settle_s
            )
        else:
            source = SqliteTable(
                cfg.resolve(cfg.source.path),
                cfg.source.table,
                events,
                shop=cfg.shop.name,
                items=items,
                log=log,
                batch_rows=cfg.source.batch_rows,
            )
        updater = GraphUpdater(paths, catalog, config, events)
        runtime_port = cfg.daemon.runtime_port or processes.free_port()
        supernode = SuperNodeSupervisor(cfg, paths.flwr_home, runtime_port, log, paths.root / "logs" / "supernode.log")
        worker = None
        if cfg.daemon.isolation == "warm":
            from fedgraph.apps.client_app import app as client_app
            from fedgraph.deploy.warm import WarmClientAppWorker

            worker = WarmClientAppWorker(
                f"127.0.0.1:{runtime_port}", client_app, log, on_task=self.tasks.append, ignored_messages=supernode.ignored_messages
            )
        last_probe, superlink_up = 0.0, True
        last_state: tuple = ()
        last_status = 0.0
        try:
            while not self.stop_event.is_set():
                try:
                    report = source.poll()
                    if report:
                        self.last_ingest = {"at": time.time(), **report.__dict__}
                    t0 = time.perf_counter()
                    step = updater.step()
                    if step:
                        step["seconds"] = round(time.perf_counter() - t0, 4)
                        self.last_graph = {"at": time.time(), **step}
                        log.info(
                            "graph_" + step["kind"],
                            f"graph {step['kind']}: {step['users']} users re-embedded with model "
                            f"{step['model_version']} up to event offset {step['event_offset']} in {step['seconds']:.3f} s",
                            **step,
                        )
                except Exception as exc:  # noqa: BLE001 - keep the daemon alive; the log says what failed
                    log.error("daemon_step_failed", f"ingestion/graph pass failed: {type(exc).__name__}: {exc}", exc_info=exc)
                if time.time() - last_probe > 1.0:
                    superlink_up = processes.reachable(cfg.server.address)
                    last_probe = time.time()
                supernode.check(superlink_up)
                if worker is not None and worker.ident is None and processes.reachable(f"127.0.0.1:{runtime_port}"):
                    worker.start()  # once the SuperNode's runtime API is up
                state = (supernode.state, len(self.tasks), events.head, self.last_graph.get("at"))
                if state != last_state or time.time() - last_status > 2.0:  # fsyncs are not free: only on change
                    atomic_status(paths, self.status(events, updater, supernode, worker, running=True))
                    last_state, last_status = state, time.time()
                self.stop_event.wait(cfg.daemon.poll_s)
        finally:
            log.info("daemon_stopping", "daemon stopping: SuperNode and ClientApp worker")
            if worker is not None:
                worker.stop()
            supernode.stop()
            if worker is not None and worker.is_alive():
                worker.join(timeout=10)
            atomic_status(paths, self.status(events, updater, supernode, worker, running=False))
            updater.close()
            events.close()
            log.info("daemon_stopped", "daemon stopped")
        return 0

    def status(self, events: Any, updater: Any, supernode: SuperNodeSupervisor, worker: Any, *, running: bool) -> dict[str, Any]:
        from fedgraph.deploy.shop_state import load_global_model

        model = load_global_model(self.paths, header_only=True) or {}
        return {
            "shop": self.cfg.shop.name,
            "running": running,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "updated_at": time.time(),
            "superlink": self.cfg.server.address,
            "isolation": self.cfg.daemon.isolation,
            "supernode": supernode.as_dict(),
            "model": {"version": model.get("model_version"), "round": model.get("round"), "graph_model_version": updater.model_version},
            "events": events.counts(),
            "last_ingest": self.last_ingest,
            "last_graph_update": self.last_graph,
            "tasks_done": worker.tasks_done if worker is not None else None,
            "last_task": self.tasks[-1] if self.tasks else None,
        }


def run_daemon(config_path: str | Path) -> int:
    return ShopDaemon(ShopConfig.load(config_path)).run()

"""The federation server (``fedgraph server start --config server.toml``).

1. checks the certificates (``fedgraph certs init``) and every listed shop's public key;
2. starts a Flower SuperLink: TLS on (``server.pem``/``server.key``/``ca.pem``), SuperNode
   authentication on (only enrolled public keys may connect), runtime dependency installation off,
   its state in ``STATE_DIR/superlink/state.db`` (enrolments and runs survive a restart);
3. enrols every shop of ``server.shops`` through Flower's Control API (``flwr supernode register``;
   a key that is already enrolled is fine);
4. submits the fedgraph app with ``flwr run`` and streams the round log. The run directory
   ``STATE_DIR/run`` keeps a checkpoint per round, so a restarted server resumes after the last
   finished round (daemons reconnect by themselves).

Everything it starts runs in its own process group and is stopped on exit, error or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedgraph import flower_app
from fedgraph.atomic import atomic_write_json
from fedgraph.config import ConfigError, RunConfig
from fedgraph.deploy.certs import CertError, CertPaths, check_private_permissions
from fedgraph.deploy.logs import EventLogger
from fedgraph.features import pipeline
from fedgraph.runtime import processes, superlink


class ServerError(RuntimeError):
    """The server could not start or the run failed; the message says what to do."""


def signature_digest(config: RunConfig) -> str:
    from fedgraph.deploy.shop_state import model_signature_digest

    return model_signature_digest(config)


@dataclass
class ServerPaths:
    root: Path

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def superlink(self) -> Path:
        return self.root / "superlink"

    @property
    def home(self) -> Path:
        return self.root / "flwr-home"

    @property
    def app(self) -> Path:
        return self.root / "app"

    @property
    def log(self) -> Path:
        return self.root / "logs" / "server.jsonl"


def check_certs(certs: CertPaths, shops: list[str], insecure: bool) -> None:
    if insecure:
        return
    for path in (certs.ca_cert, certs.server_cert):
        if not path.exists():
            raise CertError(f"{path} is missing; create the certificates with `fedgraph certs init {certs.root} --host <server name>`")
    check_private_permissions(certs.server_key)
    missing = [s for s in shops if not certs.shop_pub(s).exists()]
    if missing:
        raise CertError(
            f"no public key for shop(s) {', '.join(missing)} (expected {certs.shop_pub(missing[0])}); "
            f"create one with `fedgraph certs shop {certs.root} {missing[0]}` or copy the shop's auth.pub there"
        )


def prepare_run_dir(paths: ServerPaths, config: RunConfig, shops: list[str]) -> None:
    from fedgraph.federation.run_dir import RunDir

    run = RunDir.at(paths.run)
    if run.config_file.exists():
        existing = RunConfig.load(run.config_file)
        if existing.to_dict() != config.to_dict():
            raise ConfigError(
                f"{paths.run} holds a run started with a different training configuration; resume it with the same "
                f"run_config, or point server.state_dir at a new directory for a new run"
            )
    else:
        config.save(run.config_file)
    index_file = run.shops_dir / "index.json"
    if index_file.exists():
        old = json.loads(index_file.read_text())["shops"]
        if old != shops:
            raise ConfigError(
                f"{paths.run} was started with shops {old}; server.shops now lists {shops}. Keep the list (and its order) to resume, or use a new state_dir"
            )
    else:
        atomic_write_json(index_file, {"shops": shops, **pipeline.index_entries(config), "dataset": {"source": "deployment"}})


def superlink_command(cfg, paths: ServerPaths) -> list[str]:
    s = cfg.server
    certs = CertPaths(cfg.certs_dir)
    cmd = [processes.flower_bin("flower-superlink")]
    if s.insecure:
        cmd.append("--insecure")
    else:
        cmd += [
            "--ssl-certfile",
            str(certs.server_cert),
            "--ssl-keyfile",
            str(certs.server_key),
            "--ssl-ca-certfile",
            str(certs.ca_cert),
            "--enable-supernode-auth",
        ]
    cmd += [
        "--disable-runtime-dependency-installation",
        "--host",
        s.host,
        "--port",
        str(s.port),
        "--database",
        str(paths.superlink / "state.db"),
        "--log-file",
        str(paths.superlink / "superlink.log"),
    ]
    return cmd


def local_address(cfg) -> str:
    host = cfg.server.host
    return f"{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{cfg.server.port}"


def write_cli_config(cfg, paths: ServerPaths) -> None:
    """The Flower CLI's configuration for this server's SuperLink (TLS unless ``server.insecure``)."""
    superlink.write_cli_config(
        paths.home, local_address(cfg), root_certificates=None if cfg.server.insecure else CertPaths(cfg.certs_dir).ca_cert
    )


def wait_ready(cfg, link: subprocess.Popen, console: Path, timeout: float = 60.0) -> None:
    """Return once the SuperLink answers on its health endpoint (over TLS unless ``server.insecure``).

    Raises:
        ServerError: it exited first, or did not answer within ``timeout`` seconds.
    """
    scheme = "http" if cfg.server.insecure else "https"
    verify = True if cfg.server.insecure else str(CertPaths(cfg.certs_dir).ca_cert)
    superlink.wait_healthy(
        link, f"{scheme}://{local_address(cfg)}/health", console=console, timeout=timeout, error=ServerError, verify=verify
    )


def enrol(cfg, paths: ServerPaths, shop: str, env: dict[str, str], log: EventLogger) -> str:
    """Register the shop's public key with the SuperLink; returns the node id (or 'already enrolled')."""
    if cfg.server.insecure:
        return "n/a (insecure: no authentication)"
    pub = CertPaths(cfg.certs_dir).shop_pub(shop)
    try:
        node = _register_in_process(cfg, shop, pub)
    except Exception as exc:  # noqa: BLE001 - the CLI below reports the failure in Flower's words
        if "already in use" in str(exc):
            log.info("shop_enrolled", f"shop {shop} was already enrolled", shop=shop)
            return "already enrolled"
        log.debug("enrol_fallback", f"in-process enrolment of {shop} failed ({type(exc).__name__}: {exc}); using `flwr supernode register`")
    else:
        log.info("shop_enrolled", f"shop {shop} enrolled (public key {pub.name}) as node {node}", shop=shop, node_id=node)
        return node
    out = subprocess.run(
        [processes.flower_bin("flwr"), "supernode", "register", str(pub), "fedgraph", "--name", shop, "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    try:
        result = json.loads(out.stdout[out.stdout.index("{") :])
    except ValueError:
        raise ServerError(
            f"enrolling shop {shop!r} failed (flwr exited {out.returncode}): {out.stdout.strip()} {out.stderr.strip()}"
        ) from None
    if result.get("success"):
        node = str(result.get("node-id"))
        log.info("shop_enrolled", f"shop {shop} enrolled (public key {pub.name}) as node {node}", shop=shop, node_id=node)
        return node
    message = str(result.get("error-message", ""))
    if "already in use" in message:
        log.info("shop_enrolled", f"shop {shop} was already enrolled", shop=shop)
        return "already enrolled"
    raise ServerError(f"enrolling shop {shop!r} failed: {message.strip()}")


def _register_in_process(cfg, shop: str, pub: Path) -> str:
    """``flwr supernode register`` without starting a process: the same Control API call."""
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.cli.typing import SuperLinkConnection
    from flwr.cli.utils import init_http_client_from_connection
    from flwr.proto.control_pb2 import RegisterNodeRequest  # pylint: disable=E0611

    key = try_load_public_key(pub)
    conn = SuperLinkConnection(name="fedgraph", address=local_address(cfg), root_certificates=str(CertPaths(cfg.certs_dir).ca_cert))
    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Using SuperLink: ..."
        client = init_http_client_from_connection(conn)
    try:
        response = client.RegisterNode(request=RegisterNodeRequest(public_key=key, name=shop))
    except Exception as exc:
        text = getattr(getattr(exc, "response", None), "text", "")
        raise RuntimeError(f"{exc} {text}") from exc
    finally:
        client.close()
    if not response.node_id:
        raise RuntimeError("the SuperLink returned no node id")
    return str(response.node_id)


def start_server(cfg, overrides: list[str], log: EventLogger, *, say: Callable[[str], None] = print) -> int:
    """Run the SuperLink, enrol the shops, run the training to the end (or until stopped)."""
    paths = ServerPaths(cfg.state_dir)
    shops = [str(s) for s in cfg.server.shops]
    check_certs(CertPaths(cfg.certs_dir), shops, cfg.server.insecure)
    config = cfg.run_config(overrides)
    prepare_run_dir(paths, config, shops)
    paths.superlink.mkdir(parents=True, exist_ok=True)
    # SecAgg+ needs the shops' secaggplus_mod: the bundle names that ClientApp, and each shop daemon
    # runs it from its own installed fedgraph.apps.client_app
    flower_app.write_app(paths.app, secure_aggregation=config.privacy.secure_aggregation)
    write_cli_config(cfg, paths)
    env = processes.flower_env(paths.home)
    os.environ["FLWR_HOME"] = str(paths.home)  # in-process Control API calls (enrolment) read it
    console = paths.superlink / "superlink.console.log"
    link = None
    stopping = {"flag": False}

    def on_signal(signum, _frame):
        stopping["flag"] = True
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        # If this process is killed outright the SuperLink goes at once (SIGKILL): its graceful
        # SIGTERM shutdown can wait on a round in flight, and the port must be free for a restart.
        # Its state is in SQLite (transactions), and its helpers exit when their parent does.
        link = processes.spawn(superlink_command(cfg, paths), env=env, log_path=console, on_parent_death=signal.SIGKILL)
        wait_ready(cfg, link, console)
        log.info(
            "superlink_ready",
            f"SuperLink listening on {cfg.server.host}:{cfg.server.port} "
            f"({'INSECURE' if cfg.server.insecure else 'TLS, SuperNode authentication on'}); runtime dependency installation off",
            pid=link.pid,
            host=cfg.server.host,
            port=cfg.server.port,
            tls=not cfg.server.insecure,
        )
        for shop in shops:
            enrol(cfg, paths, shop, env, log)
        from fedgraph.federation.secure_aggregation import dropout_warning

        fragile = dropout_warning(config, len(shops))
        if fragile:
            log.warning("secagg_fragile", fragile, shops=len(shops))
            say(f"WARNING: {fragile}")
        from fedgraph.federation.secagg_masks import RUN_CONFIG_KEY, install

        run_config = (
            f"run-dir='{paths.run}' shops='{','.join(shops)}' fedgraph-model='{signature_digest(config)}' {RUN_CONFIG_KEY}='{install()}'"
        )
        command = [processes.flower_bin("flwr"), "run", str(paths.app), "fedgraph", "--stream", "--run-config", run_config]
        log.info(
            "run_submitted",
            f"training run submitted: {config.train.rounds} rounds, {len(shops)} shops, "
            f"at least {config.federation.min_train_shops} per round",
            rounds=config.train.rounds,
            shops=shops,
        )

        def on_line(line: str) -> None:
            if "[fedgraph]" in line:
                text = line[line.index("[fedgraph]") + len("[fedgraph] ") :].strip()
                (log.warning if "failed" in text else log.info)("round", text)
                say(text)

        code = superlink.submit(command, env=env, log_path=paths.root / "logs" / "run.log", on_line=on_line)
        if code != 0:
            raise ServerError(f"`flwr run` exited with code {code}; see {paths.root / 'logs' / 'run.log'}")
        finished = _finished_rounds(paths)
        if finished < config.train.rounds:
            raise ServerError(
                f"the run stopped after round {finished} of {config.train.rounds}; see {paths.root / 'logs' / 'run.log'} "
                f"and {paths.superlink / 'superlink.log'}, then start the server again to resume"
            )
        log.info("run_finished", f"training finished: {finished} rounds; checkpoints in {paths.run / 'checkpoints'}", rounds=finished)
        if not cfg.server.exit_after_run:
            say("training finished; SuperLink keeps serving (Ctrl-C to stop)")
            while link.poll() is None:
                time.sleep(1.0)
        return 0
    finally:
        processes.stop_tree(link)  # with the SuperExec and the ServerApp it started
        signal.signal(signal.SIGTERM, previous)
        log.info("server_stopped", "SuperLink and the ServerApp stopped")


def _finished_rounds(paths: ServerPaths) -> int:
    from fedgraph.federation.run_dir import RunDir

    rounds = RunDir.at(paths.run).checkpoint_rounds()
    return rounds[-1] if rounds else 0

"""Run a Flower app on Flower's simulation engine, the way ``flwr run`` does, but owned.

:func:`run_flower_simulation` starts a private SuperLink in simulation mode on a free
loopback port (runtime dependency installation off, telemetry off, its state and logs in
the run directory), submits the fedgraph app to it with ``flwr run`` and the run's
``--federation-config`` (number of shops, CPU/GPU share per shop), streams the log, and
always stops the SuperLink and everything it started, also on Ctrl-C or error.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path

from fedgraph import flower_app
from fedgraph.runtime import processes, superlink


class FlowerRunError(RuntimeError):
    """The Flower simulation could not start or did not finish."""


class _TerminatedError(KeyboardInterrupt):
    """SIGTERM turned into an exception, so that a terminated run still stops what it started."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _TerminatedError(f"terminated by signal {signum}")


def run_flower_simulation(
    run_dir: Path,
    *,
    num_shops: int,
    cpus_per_shop: int = 1,
    gpus_per_shop: float = 0.0,
    total_cpus: int = 0,
    on_line: Callable[[str], None] = print,
    startup_timeout: float = 60.0,
    secure_aggregation: bool = False,
    ray_address: str = "",
) -> None:
    """Run the fedgraph ServerApp/ClientApp for ``run_dir`` on ``num_shops`` virtual shops
    (the ClientApp with Flower's SecAgg+ mod with ``secure_aggregation``). With ``ray_address``
    the shops run on that existing Ray cluster (Flower's Ray backend calls ``ray.init()``, which
    joins the cluster named by ``RAY_ADDRESS``); ``total_cpus`` is then the cluster's business."""
    flower_dir = run_dir / "flower"
    app_dir = flower_dir / "app"
    home = flower_dir / "home"
    home.mkdir(parents=True, exist_ok=True)
    flower_app.write_app(app_dir, secure_aggregation=secure_aggregation)
    port = processes.free_port()
    superlink.write_cli_config(home, f"127.0.0.1:{port}")
    # Ray's log de-duplication hides which shop printed what; a zero GPU share must not hide GPUs.
    env = processes.flower_env(home, RAY_DEDUP_LOGS="0", RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO="0")
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
    else:
        env.pop("RAY_ADDRESS", None)  # an operator's RAY_ADDRESS must not silently move the run onto a cluster
    log_path = run_dir / "flower.log"
    console_path = flower_dir / "superlink.console.log"
    previous_sigterm = None
    if threading.current_thread() is threading.main_thread():
        previous_sigterm = signal.signal(signal.SIGTERM, _raise_terminated)
    command = [
        processes.flower_bin("flower-superlink"),
        "--insecure",
        "--simulation",
        "--disable-runtime-dependency-installation",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--database",
        str(flower_dir / "state.db"),
        "--log-file",
        str(flower_dir / "superlink.log"),
    ]
    link = processes.spawn(command, env=env, log_path=console_path)
    try:
        superlink.wait_healthy(link, f"http://127.0.0.1:{port}/health", console=console_path, timeout=startup_timeout, error=FlowerRunError)
        fed = [
            f"num-supernodes={num_shops}",
            f"client-resources-num-cpus={max(1, int(cpus_per_shop))}",
            f"client-resources-num-gpus={float(gpus_per_shop)}",
            'init-args-logging-level="error"',
            "init-args-log-to-driver=true",
        ]
        if total_cpus and not ray_address:  # Ray refuses num_cpus when joining a cluster
            fed.append(f"init-args-num-cpus={int(total_cpus)}")
        command = [
            processes.flower_bin("flwr"),
            "run",
            str(app_dir),
            "fedgraph",
            "--stream",
            "--run-config",
            f"run-dir='{run_dir}'",
            "--federation-config",
            " ".join(fed),
        ]
        code = superlink.submit(command, env=env, log_path=log_path, on_line=on_line)
        if code != 0:
            raise FlowerRunError(f"`flwr run` exited with code {code}; see {log_path}")
    finally:
        processes.stop_tree(link)  # with the SuperExec, the ServerApp and the Ray cluster it started
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)

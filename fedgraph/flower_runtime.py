"""Run a Flower app on Flower's simulation engine, the way ``flwr run`` does, but owned.

:func:`run_flower_simulation` starts a private SuperLink in simulation mode on a free
loopback port (runtime dependency installation off, telemetry off, its state and logs in
the run directory), submits the fedgraph app to it with ``flwr run`` and the run's
``--federation-config`` (number of shops, CPU/GPU share per shop), streams the log, and
always stops the SuperLink and everything it started, also on Ctrl-C or error.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from fedgraph import flower_app
from fedgraph.console import strip_ansi


class FlowerRunError(RuntimeError):
    """The Flower simulation could not start or did not finish."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str:
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def _tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return ("\n  last lines:\n    " + "\n    ".join(text[-lines:])) if text else ""


def _stop(process: subprocess.Popen) -> None:
    """Stop ``process``, its process group and every descendant: Flower starts some of its
    helpers (``flwr-simulation`` and the Ray cluster under it) in sessions of their own, which a
    signal to the group alone would leave running."""
    import psutil

    try:
        family = psutil.Process(process.pid).children(recursive=True)
    except psutil.Error:
        family = []
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for child in family:
        try:
            child.terminate()
        except psutil.Error:
            pass
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass
    _, alive = psutil.wait_procs(family, timeout=10)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for child in alive:
        try:
            child.kill()
        except psutil.Error:
            pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


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
) -> None:
    """Run the fedgraph ServerApp/ClientApp for ``run_dir`` on ``num_shops`` virtual shops
    (the ClientApp with Flower's SecAgg+ mod with ``secure_aggregation``)."""
    flower_dir = run_dir / "flower"
    app_dir = flower_dir / "app"
    home = flower_dir / "home"
    home.mkdir(parents=True, exist_ok=True)
    flower_app.write_app(app_dir, secure_aggregation=secure_aggregation)
    port = _free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "fedgraph"\n\n[superlink.fedgraph]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    # Flower starts helpers (flower-superexec, flwr-serverapp, ...) by bare name, so the
    # environment this interpreter runs in must come first on PATH even when it was never
    # activated (e.g. `.venv/bin/fedgraph ...`).
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
        "FLWR_HOME": str(home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "PYTHONUNBUFFERED": "1",
        "RAY_DEDUP_LOGS": "0",
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
        "TOKENIZERS_PARALLELISM": "false",
    }
    log_path = run_dir / "flower.log"
    console_path = flower_dir / "superlink.console.log"
    previous_sigterm = None
    if threading.current_thread() is threading.main_thread():
        previous_sigterm = signal.signal(signal.SIGTERM, _raise_terminated)
    console = open(console_path, "ab")
    superlink = subprocess.Popen(
        [
            _bin("flower-superlink"),
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
        ],
        env=env,
        stdout=console,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    console.close()
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if superlink.poll() is not None:
                raise FlowerRunError(
                    f"flower-superlink exited with code {superlink.returncode} while starting; "
                    f"see {flower_dir / 'superlink.log'} and {console_path}{_tail(console_path)}"
                )
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).is_success:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise FlowerRunError(
                    f"flower-superlink did not become ready in {startup_timeout:.0f} s; see {flower_dir / 'superlink.log'}"
                )
            time.sleep(0.3)
        fed = [
            f"num-supernodes={num_shops}",
            f"client-resources-num-cpus={max(1, int(cpus_per_shop))}",
            f"client-resources-num-gpus={float(gpus_per_shop)}",
            'init-args-logging-level="error"',
            "init-args-log-to-driver=true",
        ]
        if total_cpus:
            fed.append(f"init-args-num-cpus={int(total_cpus)}")
        command = [
            _bin("flwr"),
            "run",
            str(app_dir),
            "fedgraph",
            "--stream",
            "--run-config",
            f"run-dir='{run_dir}'",
            "--federation-config",
            " ".join(fed),
        ]
        with open(log_path, "a", encoding="utf-8") as log:
            log.write("$ " + " ".join(command) + "\n")  # the `flwr run` this run submitted (README: Why not `flwr run .`?)
            runner = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
            try:
                assert runner.stdout is not None
                for line in runner.stdout:
                    line = strip_ansi(line)
                    log.write(line)
                    log.flush()
                    on_line(line.rstrip("\n"))
                runner.wait()
            finally:
                _stop(runner)
        if runner.returncode != 0:
            raise FlowerRunError(f"`flwr run` exited with code {runner.returncode}; see {log_path}")
    finally:
        _stop(superlink)
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)

"""A SuperLink's life as both engines see it: the Flower CLI's configuration, waiting until it
answers, and submitting a run to it with ``flwr run --stream``.

Used by :func:`fedgraph.runtime.simulation_engine.run_flower_simulation` (simulation SuperLink on
loopback, insecure) and :func:`fedgraph.deploy.server.start_server` (Deployment Engine, TLS).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from fedgraph.atomic import atomic_write_text
from fedgraph.console import strip_ansi
from fedgraph.runtime import processes


def write_cli_config(home: Path, address: str, *, root_certificates: Path | None = None) -> Path:
    """``FLWR_HOME/config.toml`` naming one SuperLink, ``fedgraph``, at ``address``: insecure
    without ``root_certificates``, else verified against that CA file."""
    lines = ["[superlink]", 'default = "fedgraph"', "", "[superlink.fedgraph]", f'address = "{address}"']
    lines.append("insecure = true" if root_certificates is None else f'root-certificates = "{root_certificates}"')
    home.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(home / "config.toml", "\n".join(lines) + "\n")


def tail(path: Path, lines: int = 12) -> str:
    """The last ``lines`` lines of a log, indented, to end an error message with ("" if none)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return ("\n  last lines:\n    " + "\n    ".join(text[-lines:])) if text else ""


def wait_healthy(
    superlink: subprocess.Popen,
    url: str,
    *,
    console: Path,
    timeout: float,
    error: type[Exception],
    verify: bool | str = True,
) -> None:
    """Return once ``GET url`` (the SuperLink's ``/health``) succeeds.

    Raises:
        error: the SuperLink exited first (with the tail of ``console``), or did not answer
            within ``timeout`` seconds.
    """
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if superlink.poll() is not None:
            raise error(f"flower-superlink exited with code {superlink.returncode} while starting; see {console}{tail(console)}")
        try:
            if httpx.get(url, timeout=1.0, verify=verify).is_success:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise error(f"the SuperLink did not answer on {url} within {timeout:.0f} s; see {console}")
        time.sleep(0.3)


def submit(command: list[str], *, env: dict[str, str], log_path: Path, on_line: Callable[[str], None]) -> int:
    """Run a ``flwr run ... --stream`` command to its end: every line (ANSI codes stripped) is
    appended to ``log_path`` and passed to ``on_line``. Returns the exit code; the command and
    everything it started are stopped when this returns or raises."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write("$ " + " ".join(command) + "\n")  # what was submitted (README: Why not `flwr run .`?)
        runner = processes.spawn(command, env=env, pipe=True, text=True)
        try:
            assert runner.stdout is not None
            for line in runner.stdout:
                line = strip_ansi(line)
                log.write(line)
                log.flush()
                on_line(line.rstrip("\n"))
            runner.wait()
        finally:
            processes.stop_tree(runner)
    return int(runner.returncode)

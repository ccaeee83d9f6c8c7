"""Starting and stopping Flower's processes: own process groups, always cleaned up.

Every process is started in a new session (its own process group) so that stopping it also stops
whatever it spawned (``flower-superexec``, ``flwr-serverapp``, ``flwr-clientapp``...). On Linux a
child also gets ``PR_SET_PDEATHSIG``: if the daemon or server that started it dies, even by
SIGKILL, the child receives SIGTERM and shuts down cleanly (a SuperNode then tells the SuperLink it
is leaving, so a round in flight fails over to the other shops at once).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1


def flower_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for Flower commands: this interpreter's bin/ first on PATH, no telemetry."""
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
        "FLWR_HOME": str(home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "PYTHONUNBUFFERED": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **extra,
    }


def flower_bin(name: str) -> str:
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def _die_with_parent(sig: int = signal.SIGTERM) -> Any:
    def arm() -> None:  # pragma: no cover - runs in the child between fork and exec
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
        except OSError:
            pass

    return arm


def spawn(command: list[str], *, env: dict[str, str], log_path: Path | None = None, pipe: bool = False,
          on_parent_death: int = signal.SIGTERM, **kwargs: Any) -> subprocess.Popen:  # fmt: skip
    """Start ``command`` in its own process group, output to ``log_path`` (or a pipe). On Linux
    the child gets ``on_parent_death`` when the process that started it dies."""
    if pipe:
        out: Any = subprocess.PIPE
    elif log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(log_path, "ab")
    else:
        out = subprocess.DEVNULL
    preexec = _die_with_parent(on_parent_death) if sys.platform.startswith("linux") else None
    try:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=preexec, **kwargs)  # fmt: skip
    finally:
        if not pipe and log_path is not None:
            out.close()


def stop(process: subprocess.Popen | None, *, grace_s: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it is still there after ``grace_s``."""
    if process is None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    try:  # also the group's stragglers (a flwr-clientapp the SuperNode started)
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def reachable(address: str, timeout: float = 1.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False

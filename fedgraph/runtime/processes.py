"""Starting and stopping Flower's processes: own process groups, always cleaned up.

Every process is started in a new session (its own process group) so that stopping it also stops
whatever it spawned (``flower-superexec``, ``flwr-serverapp``, ``flwr-clientapp``...). On Linux a
child also gets ``PR_SET_PDEATHSIG``: if the daemon or server that started it dies, even by
SIGKILL, the child receives a signal and shuts down (a SuperNode, started through
:mod:`fedgraph.deploy.guard` so that it gets exactly one SIGTERM, then tells the SuperLink it is
leaving, so a round in flight fails over to the other shops at once).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
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


def die_with_parent(sig: int = signal.SIGTERM) -> Any:
    """A ``preexec_fn`` that asks Linux to send ``sig`` to the child when its parent dies.

    Linux sends it once per exiting *thread* of the parent: a multi-threaded parent that dies
    signals the child several times (see :mod:`fedgraph.deploy.guard` for a child that must be
    told only once)."""

    def arm() -> None:  # pragma: no cover - runs in the child between fork and exec
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
        except OSError:
            pass

    return arm


def spawn(
    command: list[str],
    *,
    env: dict[str, str],
    log_path: Path | None = None,
    pipe: bool = False,
    on_parent_death: int = signal.SIGTERM,
    **kwargs: Any,
) -> subprocess.Popen:
    """Start ``command`` in its own process group, output to ``log_path`` (or a pipe). On Linux
    the child gets ``on_parent_death`` when the process that started it dies."""
    if pipe:
        out: Any = subprocess.PIPE
    elif log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(log_path, "ab")
    else:
        out = subprocess.DEVNULL
    preexec = die_with_parent(on_parent_death) if sys.platform.startswith("linux") else None
    try:
        return subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=preexec, **kwargs
        )
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


def _stat(pid: int | str) -> list[str] | None:
    """Fields of ``/proc/PID/stat`` after the command name (state first, then the parent pid),
    or None when there is no such process (or no ``/proc``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields if len(fields) > 1 else None


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, grandchildren...), whatever their session.

    Read from ``/proc`` (Linux); elsewhere the list is empty."""
    proc = Path("/proc")
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir() if proc.is_dir() else []:
        fields = _stat(entry.name) if entry.name.isdigit() else None
        if fields is not None and fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stop_tree(process: subprocess.Popen | None, *, grace_s: float = 10.0) -> None:
    """:func:`stop`, then every process it had started in sessions of their own.

    Flower's SuperLink runs ``flower-superexec`` in a new session, which runs ``flwr-serverapp``;
    stopping the SuperLink's group leaves that ServerApp running until it notices the SuperLink is
    gone. This stops it too: SIGTERM, then SIGKILL after ``grace_s``."""
    if process is None:
        return
    tree = descendants(process.pid)
    stop(process, grace_s=grace_s)
    left = [pid for pid in tree if _signal(pid, signal.SIGTERM)]
    deadline = time.monotonic() + grace_s
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [pid for pid in left if _signal(pid, 0)]
    for pid in left:
        _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: int) -> bool:
    """Send ``sig`` (0: only check) to a live, non-zombie ``pid``; False if it is gone."""
    fields = _stat(pid)
    if (fields is None and sys.platform.startswith("linux")) or (fields is not None and fields[0] == "Z"):
        return False
    try:
        os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


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

"""Helpers shared by the ``simulations/bench_*.py`` benchmarks (not a benchmark itself).

* :func:`machine` -- one line describing where a benchmark ran (CPU, cores, RAM, torch,
  GPU) and :func:`load` the 1-minute load average, printed beside every figure because the
  machine may be shared;
* :class:`MemorySampler` -- peak memory of this process, or of this process and all its
  descendants (Flower's SuperLink, Ray workers), sampled in a background thread;
* :func:`table` -- a Markdown table (what every benchmark prints, pasteable into RESULTS.md).
"""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Sequence
from typing import Any

import psutil


def load() -> str:
    """The 1/5/15-minute load averages, e.g. ``"1.9/1.2/0.8"``."""
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def machine(device: str = "cpu") -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    ram = psutil.virtual_memory().total / 2**30
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, {ram:.0f} GiB RAM, {gpu}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads; device {device}; python {platform.python_version()}"
    )


class MemorySampler:
    """Peak memory while the ``with`` block runs, sampled every ``interval`` seconds.

    ``tree=False``: resident set size (RSS) of this process; the figure reported is the peak
    (``peak_mb``) and the peak above the RSS at entry (``delta_mb``).
    ``tree=True``: this process and every descendant; ``peak_mb`` is the peak of the summed
    proportional set size (PSS: shared pages divided among the processes sharing them, so
    libraries mapped by many Ray workers are counted once), ``peak_rss_mb`` the peak of the
    summed RSS (double-counts shared pages) and ``peak_procs`` the most processes seen.
    ``roles`` (tree only): name -> a substring of a process's command line; ``role_peak_mb[name]``
    is then the peak PSS of the largest single process whose command line contains it (e.g.
    ``{"server": "flwr-simulation", "worker": "ray::"}``: the ServerApp process and the largest
    Ray worker).
    """

    def __init__(self, *, tree: bool = False, interval: float = 0.05, roles: dict[str, str] | None = None) -> None:
        self.tree = tree
        self.interval = interval
        self.peak_mb = self.delta_mb = self.peak_rss_mb = 0.0
        self.peak_procs = 0
        self.roles = dict(roles or {})
        self.role_peak_mb = {name: 0.0 for name in self.roles}
        self._stop = threading.Event()
        self._me = psutil.Process()

    def _sample(self) -> None:
        if not self.tree:
            rss = self._me.memory_info().rss / 2**20
            self.peak_mb = max(self.peak_mb, rss)
            return
        procs = [self._me, *self._me.children(recursive=True)]
        pss = rss = 0.0
        for p in procs:
            try:
                info = p.memory_full_info()
                one = getattr(info, "pss", info.rss) / 2**20
                pss += one
                rss += info.rss / 2**20
                if self.roles:
                    line = " ".join(p.cmdline())
                    for name, needle in self.roles.items():
                        if needle in line:
                            self.role_peak_mb[name] = max(self.role_peak_mb[name], one)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        self.peak_mb = max(self.peak_mb, pss)
        self.peak_rss_mb = max(self.peak_rss_mb, rss)
        self.peak_procs = max(self.peak_procs, len(procs))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._sample()
            except psutil.Error:
                pass

    def __enter__(self) -> MemorySampler:
        self._start = self._me.memory_info().rss / 2**20
        self._sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.delta_mb = self.peak_mb - self._start


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A Markdown table of ``rows`` (dicts); floats get 3 significant decimals' worth."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            if v != v:
                return "n/a"
            return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}" if abs(v) < 1 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M")

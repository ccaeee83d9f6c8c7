"""Structured logs: one JSON object per line, with a level, for the shop daemon and the server.

Every line has ``ts`` (ISO-8601 UTC), ``level`` (debug/info/warning/error), ``logger``,
``event`` (a stable machine-readable name, e.g. ``file_quarantined``) and ``msg`` (what a
person reads), plus event-specific fields. ``jq 'select(.level=="error")' daemon.jsonl``
finds the problems.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", "log"),
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class EventLogger:
    """``log.info("file_ingested", "ingested 12 events from a.csv", file="a.csv", rows=12)``."""

    def __init__(self, logger: logging.Logger):
        self._logger = logger

    def _log(self, level: int, event: str, msg: str, exc_info: Any = None, **fields: Any) -> None:
        self._logger.log(level, msg, extra={"event": event, "fields": fields}, exc_info=exc_info)

    def debug(self, event: str, msg: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, msg, **fields)

    def info(self, event: str, msg: str, **fields: Any) -> None:
        self._log(logging.INFO, event, msg, **fields)

    def warning(self, event: str, msg: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, msg, **fields)

    def error(self, event: str, msg: str, exc_info: Any = None, **fields: Any) -> None:
        self._log(logging.ERROR, event, msg, exc_info=exc_info, **fields)

    def close(self) -> None:
        """Flush and close this logger's handlers (a short-lived command's last line is on disk)."""
        for handler in list(self._logger.handlers):
            handler.flush()
            handler.close()
            self._logger.removeHandler(handler)


def setup_logging(name: str, log_file: Path | None, level: str = "info", *, stderr: bool = True) -> EventLogger:
    """A JSON-lines logger writing to ``log_file`` (appending) and/or stderr."""
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    logger = logging.getLogger(name)
    logger.setLevel(LEVELS[level])
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    formatter = JsonFormatter()
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file, encoding="utf-8")
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    if stderr:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    return EventLogger(logger)


def get_logger(name: str) -> EventLogger:
    return EventLogger(logging.getLogger(name))


def adopt(name: str, into: EventLogger, level: str = "warning") -> None:
    """Route a library's logger (e.g. ``flwr``) into our JSON handlers, at ``level`` and above."""
    ours = into._logger
    other = logging.getLogger(name)
    for handler in list(other.handlers):
        other.removeHandler(handler)
    for handler in ours.handlers:
        other.addHandler(handler)
    other.propagate = False
    other.setLevel(LEVELS[level])
    floor = LEVELS[level]
    for f in list(other.filters):
        other.removeFilter(f)
    other.addFilter(lambda record: record.levelno >= floor)  # even if the library lowers its level later

"""Privacy audit of a finished run: ``fedgraph audit RUN_DIR`` (see :mod:`fedgraph.audit.core`).

The names below are imported on first use, so that ``fedgraph --help`` and every other command
that only registers the ``audit`` subcommand do not pay for importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedgraph.audit.core import AuditOptions, run_audit, validate

__all__ = ["AuditOptions", "run_audit", "validate"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from fedgraph.audit import core

        return getattr(core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

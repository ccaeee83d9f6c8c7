"""Privacy audit of a finished run: ``fedgraph audit RUN_DIR`` (see :mod:`fedgraph.audit.core`)."""

from fedgraph.audit.core import AuditOptions, run_audit, validate

__all__ = ["AuditOptions", "run_audit", "validate"]

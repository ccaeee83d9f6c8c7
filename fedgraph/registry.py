"""What every extension point's registry shares: a name -> entry table that refuses a second,
different entry of the same name, and the import of every entry file of a package.

Used by :mod:`fedgraph.federation.strategies`, :mod:`fedgraph.privacy.accountants`,
:mod:`fedgraph.baselines` and :mod:`fedgraph.graph.stores`. Imports nothing from fedgraph, so
the config can read any registry.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    """Entries by their ``name`` attribute; ``what`` names the kind in errors."""

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what

    def register(self, entry: T) -> T:
        """Add ``entry`` under ``entry.name``; the same name with a different entry is an error."""
        name = entry.name  # type: ignore[attr-defined]
        if name in self and self[name] != entry:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self[name] = entry
        return entry


def import_entries(package: str, path: Iterable[str], *, skip: Iterable[str] = ()) -> None:
    """Import every module of ``package`` (its ``__path__``) except ``skip``: each registers its entry."""
    left_out = set(skip)
    for module in pkgutil.iter_modules(list(path)):
        if module.name not in left_out:
            importlib.import_module(f"{package}.{module.name}")


__all__ = ["Registry", "import_entries"]

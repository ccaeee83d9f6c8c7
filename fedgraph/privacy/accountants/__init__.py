"""The DP accountants ``privacy.accountant`` can name: a registry, one file each.

An accountant turns a history of DP-SGD steps, ``[(noise_multiplier, sample_rate, steps)]``
(Opacus' format, already merged per mechanism), into the ε spent at a δ. Each file in this
package calls :func:`register` with an :class:`Accountant`; the package imports every file, so
adding an accountant is adding a file. :mod:`fedgraph.privacy.accounting` (ε, the reported
figure, noise planning) and the config check read the registry.

This package imports nothing from fedgraph and no Opacus at import time (each accountant
imports it when it computes), so the config can read the registry and reading a ledger stays
quick.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fedgraph.registry import Registry, import_entries

History = Sequence[tuple[float, float, int]]


@dataclass(frozen=True)
class Accountant:
    """One accountant.

    Attributes:
        name: its ``privacy.accountant`` word.
        description: what it is, with its reference (for reports).
        applies: whether its numerics are sound for a (merged, non-empty, σ > 0) history;
            where not, ε falls back to ``rdp``, which always applies.
        epsilon: ``epsilon(history, delta) -> ε`` for a merged history as a tuple (may be NaN
            where its numerics fail: then ``rdp`` is used too).
        opacus_name: the name Opacus' ``get_noise_multiplier`` knows it by, or None: the noise
            is then planned by bisection on :attr:`epsilon`.
        plans_at: whether it can plan the noise at a sample rate (e.g. PRV needs ``0 < q < 1``).
    """

    name: str
    description: str
    applies: Callable[[History], bool]
    epsilon: Callable[[tuple[tuple[float, float, int], ...], float], float]
    opacus_name: str | None = None
    plans_at: Callable[[float], bool] = lambda sample_rate: True


ACCOUNTANTS: Registry[Accountant] = Registry("accountant")

#: The accountant every other one falls back to: valid for every history of this mechanism.
FALLBACK = "rdp"


#: Add an entry (a second, different one of the same name is an error).
register = ACCOUNTANTS.register


import_entries(__name__, __path__)

"""SecAgg+ masks from the whole seed: a guarded replacement of Flower's mask generator.

Flower 1.42's ``secaggplus_utils.pseudo_rand_gen`` folds every mask seed (a 32-byte shared
key or private seed) to 32 bits by XOR before seeding ``np.random.RandomState``, so two
different seeds with the same fold give the same mask, and a mask has at most 2^32 possible
values (Flower issue #7522; a fix is proposed in PR #7570, not released: 1.42 is the newest
release on the registry). :func:`install` replaces it, in every process that runs SecAgg+
(the shops' ``secaggplus_mod`` and the server's ``SecAggPlusWorkflow``), with
:func:`full_seed_masks`: the ChaCha20 key stream (``cryptography``) under ``SHA-256(seed)``,
read as 64-bit words reduced modulo the mask range.

The guard: :func:`install` probes Flower's generator with two seeds that fold alike and
replaces it only if their masks are equal (the flaw is present); a Flower that fixed it keeps
its own generator. Shops and server must use the same generator (their masks must cancel), so
the server names its generator in the run config (:data:`RUN_CONFIG_KEY`) and a shop refuses
a run whose generator differs from its own (:func:`check_same`).
"""

from __future__ import annotations

import hashlib
import importlib

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

RUN_CONFIG_KEY = "secagg-masks"
#: Names of the two generators a process can use.
FULL_SEED, FLOWER = "chacha20-sha256", "flower"


def full_seed_masks(seed: bytes, num_range: int, dimensions_list: list[tuple[int, ...]]) -> list[np.ndarray]:
    """Masks uniform on ``[0, num_range)`` for each shape of ``dimensions_list``, from all of ``seed``."""
    total = sum(int(np.prod(d)) if len(d) else 1 for d in dimensions_list)
    key = hashlib.sha256(bytes(seed)).digest()
    stream = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor().update(bytes(8 * total))
    words = np.frombuffer(stream, dtype="<u8") % np.uint64(num_range)
    out, start = [], 0
    for d in dimensions_list:
        n = int(np.prod(d)) if len(d) else 1
        out.append(words[start : start + n].astype(np.int64).reshape(d))
        start += n
    return out


def folds_seeds(generator) -> bool:
    """True if ``generator`` gives equal masks for two different seeds with the same 32-bit XOR fold."""
    a = bytes(32)
    b = (1).to_bytes(4, "little") * 2 + bytes(24)  # 1 XOR 1 = 0: folds like all zeros
    return all(np.array_equal(x, y) for x, y in zip(generator(a, 1 << 30, [(8,)]), generator(b, 1 << 30, [(8,)])))


#: The modules that look the generator up by name: the shops' mod, Flower's utilities, the server's workflow.
MODULES = (
    "flwr.client.mod.secure_aggregation.secaggplus_mod",
    "flwr.common.secure_aggregation.secaggplus_utils",
    "flwr.server.workflow.secure_aggregation.secaggplus_workflow",
)
_INSTALLED: list[str] = []


def install() -> str:
    """Replace Flower's mask generator where it folds seeds (see module docs); returns the name in use."""
    if _INSTALLED:
        return _INSTALLED[0]
    # importlib, not `import a.b.c as m`: flwr's package re-exports the *function* secaggplus_mod
    # under the submodule's name, so the import statement would hand back the function.
    mod, utils, workflow = (importlib.import_module(m) for m in MODULES)
    name = FLOWER
    if folds_seeds(utils.pseudo_rand_gen):
        for module in (utils, mod, workflow):
            module.pseudo_rand_gen = full_seed_masks
        name = FULL_SEED
    _INSTALLED.append(name)
    return name


def check_same(theirs: str) -> None:
    """Raise if the server's mask generator (``theirs``, from the run config) is not this process's."""
    ours = install()
    if theirs and theirs != ours:
        from fedgraph.federation.shop_side import ShopRefusal

        raise ShopRefusal(
            f"the server's SecAgg+ masks come from {theirs!r}, this shop's from {ours!r}: their masks would not cancel. "
            "Install the same fedgraph and flwr versions on the server and the shops"
        )

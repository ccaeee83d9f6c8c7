"""DP noise and Poisson sampling from a cryptographically secure generator.

DP-SGD's guarantee assumes that nobody can predict the noise or the batch sampling. Opacus'
``secure_mode`` provides that with ``torchcsprng``, which is no longer published for current
PyTorch releases; this module gives the same two things with a standard CSPRNG instead:

* :class:`SecureRandom`: the ChaCha20 key stream (RFC 8439, from the ``cryptography`` package)
  under a 256-bit key and a 128-bit nonce drawn from the OS (``secrets``). Uniform doubles take
  53 bits each; Gaussians come from the Box-Muller transform in float64.
* :func:`secure_noise_like`: Gaussian noise of standard deviation ``std`` for a tensor, made as
  Opacus' secure mode makes it: the sum of four independent N(0, std²) draws divided by two,
  which resists the floating-point attacks on Gaussian sampling (Holohan & Braghin 2021,
  arXiv:2107.10138, section 5.1; Opacus ``_generate_noise``).
* :class:`SecurePoissonSampler`: Poisson sampling (each user independently with probability q per
  step), a drop-in for Opacus' ``UniformWithReplacementSampler``.

Nothing here is seeded from the configuration, so nothing here is reproducible: that is the point.
Simulations that need reproducible runs use ``privacy.deterministic_noise = true`` (seeded torch
generators), which protects nobody from whoever knows the seed (see PRIVACY.md).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterator

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

#: Name recorded in the ledger and the audit for noise drawn here.
SOURCE = "csprng (ChaCha20 keyed from the OS)"


class SecureRandom:
    """Uniform and Gaussian samples from a ChaCha20 key stream keyed from the OS (see module docs)."""

    def __init__(self) -> None:
        cipher = Cipher(algorithms.ChaCha20(secrets.token_bytes(32), secrets.token_bytes(16)), mode=None)
        self._stream = cipher.encryptor()

    def _words(self, n: int) -> np.ndarray:
        return np.frombuffer(self._stream.update(bytes(8 * n)), dtype="<u8")

    def uniform(self, n: int) -> np.ndarray:
        """``n`` doubles, uniform on the open interval (0, 1), 53 random bits each."""
        return ((self._words(n) >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53

    def normal(self, n: int) -> np.ndarray:
        """``n`` independent N(0, 1) doubles (Box-Muller)."""
        half = (n + 1) // 2
        u1, u2 = self.uniform(half), self.uniform(half)
        radius = np.sqrt(-2.0 * np.log(u1))
        angle = 2.0 * math.pi * u2
        return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:n]


def secure_noise_like(reference: torch.Tensor, std: float, rng: SecureRandom) -> torch.Tensor:
    """N(0, std²) noise shaped like ``reference`` (its dtype and device): ``(z1 + z2 + z3 + z4) / 2``."""
    if std == 0:
        return torch.zeros_like(reference)
    n = reference.numel()
    z = rng.normal(4 * n).reshape(4, n).sum(axis=0) * (0.5 * std)
    return torch.from_numpy(z).reshape(reference.shape).to(device=reference.device, dtype=reference.dtype)


class SecurePoissonSampler:
    """Poisson sampling of ``num_samples`` users at rate ``sample_rate`` for ``steps`` steps, from a CSPRNG.

    Yields one index tensor per step (possibly empty), like Opacus' ``UniformWithReplacementSampler``.
    """

    def __init__(self, *, num_samples: int, sample_rate: float, steps: int, rng: SecureRandom) -> None:
        if not 0 < sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        self.num_samples, self.sample_rate, self.steps, self.rng = num_samples, sample_rate, steps, rng

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[torch.Tensor]:
        for _ in range(self.steps):
            yield torch.from_numpy(np.flatnonzero(self.rng.uniform(self.num_samples) < self.sample_rate))

"""Text encoders: a registry of the models that turn catalog text into item vectors, one file each.

An encoder is a file in this package that calls :func:`register` with an :class:`EncoderSpec`:
how to build it from the run configuration and what identifies it (its weights' fingerprint
and output width) without loading it. ``features.text_encoder`` names the encoder. The feature
pipeline (:func:`fedgraph.features.pipeline.text_vectors`) builds it; the run directory records
its identity (``index.json`` -> ``text_encoder``) and the item-feature width follows from it;
the model signature shops and server compare (:func:`fedgraph.deploy.shop_state.model_signature`)
contains it, so shops whose encoders differ in weights or width refuse to federate instead of
averaging weights that do not fit their features.

This package imports no encoder's dependencies until one is built or identified.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from fedgraph.registry import Registry, import_entries

if TYPE_CHECKING:
    import numpy as np

    from fedgraph.config import RunConfig


class TextEncoder(Protocol):
    """What the feature pipeline asks of an encoder.

    Attributes:
        dim: width of every vector :meth:`encode` returns.
        stats: counters with ``hits`` (texts served from a cache), ``embedded`` (texts run
            through the model) and ``model_loads``; the pipeline reports them.
    """

    dim: int
    stats: Any

    def encode(self, texts: Sequence[str], *, cache: bool = True) -> np.ndarray:
        """``float32 [len(texts), dim]``, unit-norm rows, in input order. ``cache=False``: no
        cache is read or written (customer text such as search queries)."""
        ...


@dataclass(frozen=True)
class EncoderSpec:
    """One encoder.

    Attributes:
        name: its ``features.text_encoder`` word.
        build: ``build(config, progress) -> TextEncoder``.
        identity: ``identity(config) -> {"fingerprint": str, "dim": int}``, computed without
            loading the model (it is called for every model signature).
        description: one line for docs and errors.
    """

    name: str
    build: Callable[[RunConfig, bool], TextEncoder]
    identity: Callable[[RunConfig], dict[str, Any]]
    description: str = ""


ENCODERS: Registry[EncoderSpec] = Registry("text encoder")

#: Add an entry (a second, different one of the same name is an error).
register = ENCODERS.register


def build_encoder(config: RunConfig, *, progress: bool = True) -> TextEncoder:
    """The configured encoder (``features.text_encoder``), ready to :meth:`~TextEncoder.encode`."""
    return ENCODERS[config.features.text_encoder].build(config, progress)


def encoder_identity(config: RunConfig) -> dict[str, Any]:
    """``{"name", "fingerprint", "dim"}`` of the configured encoder (no weights loaded)."""
    spec = ENCODERS[config.features.text_encoder]
    found = spec.identity(config)
    return {"name": spec.name, "fingerprint": str(found["fingerprint"]), "dim": int(found["dim"])}


def text_dim(config: RunConfig) -> int:
    """Width of the configured encoder's vectors: the text block of every item feature vector."""
    return encoder_identity(config)["dim"]


import_entries(__name__, __path__)

__all__ = ["ENCODERS", "EncoderSpec", "TextEncoder", "build_encoder", "encoder_identity", "register", "text_dim"]

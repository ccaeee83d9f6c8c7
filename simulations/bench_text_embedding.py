"""Benchmark: catalog text embedding throughput, cold (empty cache) and warm (cached).

Texts are the catalog texts (``title. description. Category: c``, see
:func:`fedgraph.text.catalog_texts`) of a synthetic federation (long texts, about 35 tokens)
and, with ``--source online_retail``, the bundled Online Retail titles (short, about 8
tokens). For each source it times :meth:`fedgraph.text.TextEmbedder.encode` of ``--items``
distinct texts three ways, each with a fresh :class:`TextEmbedder`:

* ``cold``: an empty cache directory (model load + MiniLM forward passes + cache writes);
  the model load is also reported on its own;
* ``warm``: the same texts again from a new embedder on the now filled cache (SQLite look-ups
  only; the model is never loaded);
* ``no cache``: the cache disabled (forward passes only, model already loaded).

    python simulations/bench_text_embedding.py                     # 2,000 synthetic texts
    python simulations/bench_text_embedding.py --items 500 --source synthetic,online_retail --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_common import MemorySampler, load, machine, table  # noqa: E402


def texts_of(source: str, n: int, seed: int) -> list[str]:
    from fedgraph.text import catalog_texts

    if source == "synthetic":
        from fedgraph.data.synthetic import generate_federation

        shops = 10
        while True:
            fed = generate_federation(shops, seed=seed, users_per_shop=(20, 20), items_per_shop=(50, 500))
            texts = list(dict.fromkeys(catalog_texts(fed.catalog)))
            if len(texts) >= n or shops > 10_000:
                return texts[:n]
            shops *= 4
    if source == "online_retail":
        from fedgraph.data.online_retail import load_online_retail

        texts = list(dict.fromkeys(catalog_texts(load_online_retail().catalog)))
        return texts[:n]
    raise ValueError(f"unknown source {source!r}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=2000, help="distinct texts per source (default %(default)s)")
    p.add_argument("--source", default="synthetic", help="comma-separated: synthetic, online_retail (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=256, help="texts per forward pass (default %(default)s, the config's)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="also print the rows as JSON")
    args = p.parse_args()

    import torch

    from fedgraph.text import TextEmbedder

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# text embedding benchmark — {machine(args.device)}")
    rows = []
    for source in [s for s in args.source.split(",") if s]:
        texts = texts_of(source, args.items, args.seed)
        with tempfile.TemporaryDirectory() as cache:
            # cold: empty cache, includes loading the model
            before = load()
            e = TextEmbedder(cache_dir=cache, device=args.device, batch_size=args.batch_size, progress=False)
            t = time.perf_counter()
            e._load_model()
            load_s = time.perf_counter() - t
            tok = e._tokenizer(texts, truncation=True, max_length=e.max_length)["input_ids"]
            mean_tokens = sum(map(len, tok)) / len(tok)
            with MemorySampler() as mem:
                t = time.perf_counter()
                e.encode(texts)
                cold = time.perf_counter() - t
            rows.append(
                {
                    "source": source,
                    "items": len(texts),
                    "mean_tokens": mean_tokens,
                    "phase": "cold (empty cache)",
                    "seconds": cold + load_s,
                    "items_per_s": len(texts) / (cold + load_s),
                    "model_load_s": load_s,
                    "peak_mb": mem.peak_mb,
                    "load": f"{before} → {load()}",
                }
            )
            # no cache: forward passes only (model loaded)
            before = load()
            e2 = TextEmbedder(cache_dir=cache, device=args.device, batch_size=args.batch_size, progress=False)
            e2._cache.disabled = True
            e2._model, e2._tokenizer, e2._device = e._model, e._tokenizer, e._device
            t = time.perf_counter()
            e2.encode(texts)
            nocache = time.perf_counter() - t
            rows.append(
                {
                    "source": source,
                    "items": len(texts),
                    "mean_tokens": mean_tokens,
                    "phase": "no cache (model loaded)",
                    "seconds": nocache,
                    "items_per_s": len(texts) / nocache,
                    "load": f"{before} → {load()}",
                }
            )
            # warm: a new embedder on the filled cache
            warm = []
            before = load()
            for _ in range(3):
                e3 = TextEmbedder(cache_dir=cache, device=args.device, batch_size=args.batch_size, progress=False)
                t = time.perf_counter()
                e3.encode(texts)
                warm.append(time.perf_counter() - t)
                assert not e3.model_loaded and e3.stats.hits == len(texts)
                e3.close()
            best = min(warm)
            rows.append(
                {
                    "source": source,
                    "items": len(texts),
                    "mean_tokens": mean_tokens,
                    "phase": "warm (cache hit), best of 3",
                    "seconds": best,
                    "items_per_s": len(texts) / best,
                    "load": f"{before} → {load()}",
                }
            )
            e.close()
    print(table(rows, ["source", "items", "mean_tokens", "phase", "seconds", "items_per_s", "model_load_s", "peak_mb", "load"]))
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

"""Text embeddings of items (title + description), cached by content hash.

``embed_items`` writes an item-embedding table (training/data/embeddings.py shape).
The cache is a parquet of (key, embedding) where key = sha1(checkpoint + text): unchanged
items are never encoded again, a changed title or a new checkpoint is.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from audiorec.errors import AudiorecError
from audiorec.itemtext import item_text
from audiorec.publish import write_parquet
from training.data.embeddings import write_item_embeddings
from training.engine import Engine, LocalEngine
from training.text.model import DEFAULT_TEXT_MODEL, load_text_model


def item_texts(items: pa.Table) -> list[str]:
    titles = items.column("title").to_pylist()
    descriptions = items.column("description").to_pylist()
    return [item_text(t, d) for t, d in zip(titles, descriptions)]


def precision_context(precision: str):
    """The autocast context of ``precision`` ("fp32": none)."""
    import contextlib

    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise AudiorecError(f"unknown text precision {precision!r} (fp32 or bf16)")
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16)


def encode_texts(
    texts: list[str],
    model_name: str | None,
    batch_size: int,
    precision: str,
    progress: bool = False,
    threads: int = 0,
) -> np.ndarray:
    """(len(texts), dim) unit float32 embeddings (one engine task on an item partition)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    model = load_text_model(model_name)
    with precision_context(precision):
        emb = model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            show_progress_bar=progress and sys.stderr.isatty(),
            convert_to_numpy=True,
        ).astype(np.float32)
    # bf16 output is normalised in bf16: renormalise in float32
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return emb


def _read_cache(cache: Path) -> dict[str, np.ndarray]:
    """The cached embeddings by content key; a missing or damaged cache is empty (a
    cache is only a shortcut: what it lacks is re-computed, never fatal)."""
    if not cache.is_file():
        return {}
    try:
        t = pq.read_table(cache)
        vecs = (
            np.stack(t.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
            if t.num_rows
            else np.zeros((0, 0), np.float32)
        )
        return dict(zip(t.column("key").to_pylist(), vecs))
    except (pa.ArrowException, KeyError, ValueError, OSError) as exc:
        print(
            f"audiorec: warning: text-embedding cache {cache} is unreadable "
            f"({type(exc).__name__}); re-encoding every item",
            flush=True,
        )
        return {}


def embed_items(
    items_parquet: str | Path,
    out: str | Path,
    *,
    model_name: str | None = None,
    cache: str | Path | None = None,
    batch_size: int = 128,
    precision: str = "fp32",
    progress: bool = True,
    engine: Engine | None = None,
) -> dict:
    """Embed every item of ``items_parquet`` into ``out``; returns counts. The items to
    encode are cut into ``engine.partitions`` contiguous batches, one task each (None or
    local: one pass here)."""
    items = pq.read_table(items_parquet, columns=["item_id", "title", "description"])
    texts = item_texts(items)
    # the checkpoint and its precision name the embedding space (and key the cache)
    checkpoint = (model_name or DEFAULT_TEXT_MODEL) + (
        "" if precision == "fp32" else f":{precision}"
    )
    keys = [hashlib.sha1(f"{checkpoint}\n{t}".encode()).hexdigest() for t in texts]
    cache = Path(cache) if cache else None
    known = _read_cache(cache) if cache else {}
    todo = sorted({k for k in keys if k not in known})
    if todo:
        by_key = dict(zip(keys, texts))
        todo_texts = [by_key[k] for k in todo]
        parts = 1 if engine is None else engine.partitions
        if parts == 1:
            emb = encode_texts(todo_texts, model_name, batch_size, precision, progress)
        else:
            chunks = np.array_split(np.arange(len(todo_texts)), parts)
            emb = np.concatenate(
                (engine or LocalEngine()).map(
                    encode_texts,
                    [
                        (
                            [todo_texts[i] for i in c],
                            model_name,
                            batch_size,
                            precision,
                            False,
                            engine.cpus_per_task if engine else 0,
                        )
                        for c in chunks
                        if len(c)
                    ],
                )
            )
        known.update(zip(todo, emb))
        if cache:
            all_keys = sorted(known)
            mat = np.stack([known[k] for k in all_keys])
            write_parquet(cache, pa.table({"key": all_keys, "embedding": list(mat)}))
    vectors = np.stack([known[k] for k in keys])
    version = f"text:{checkpoint}"
    write_item_embeddings(out, items.column("item_id").to_pylist(), vectors, version)
    return {
        "items": len(keys),
        "encoded": len(todo),
        "cached": len(keys) - len(todo),
        "dim": int(vectors.shape[1]),
        "version": version,
    }

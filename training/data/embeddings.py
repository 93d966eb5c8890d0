"""The item-embedding table: the shape the feature jobs consume.

A parquet file with one row per item:

===============  ==================================================================
item_id          string, unique
embedding        list<float32>, one fixed dimension
model_version    string (optional; the same for every row)
item_type        string (optional)
===============  ==================================================================

The HGNN writes its item embeddings in this shape, and so does the text-embedding step;
tests may write random vectors. ``read_item_embeddings`` validates and loads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from audiorec.errors import AudiorecError
from audiorec.publish import write_parquet
from training.data.arrow import vector_column


@dataclass(frozen=True)
class ItemEmbeddings:
    item_id: np.ndarray  # (n,) object/str
    vectors: np.ndarray  # (n, dim) float32
    version: str

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]


def write_item_embeddings(
    path: str | Path, item_id, vectors: np.ndarray, version: str, item_type=None
) -> None:
    n = len(vectors)
    extra = {} if item_type is None else {"item_type": pa.array(item_type, type=pa.string())}
    table = pa.table(
        {
            **extra,
            "item_id": pa.array(item_id, type=pa.string()),
            "embedding": vector_column(vectors),
            "model_version": pa.array([version] * n, type=pa.string()),
        }
    )
    write_parquet(path, table)  # readers never see a half-written table


def read_item_embeddings(path: str | Path) -> ItemEmbeddings:
    path = Path(path)
    if not path.is_file():
        raise AudiorecError(f"item-embedding table {path} does not exist")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise AudiorecError(
            f"item-embedding table {path} is unreadable ({type(exc).__name__}:"
            f" {str(exc)[:200]}); rerun the step that writes it"
        ) from None
    for col in ("item_id", "embedding"):
        if col not in table.column_names:
            raise AudiorecError(
                f"item-embedding table {path}: column {col} missing "
                f"(has: {', '.join(table.column_names)})"
            )
    emb = table.column("embedding").combine_chunks()
    if not (
        pa.types.is_list(emb.type)
        or pa.types.is_fixed_size_list(emb.type)
        or pa.types.is_large_list(emb.type)
    ):
        raise AudiorecError(
            f"item-embedding table {path}: embedding has type {emb.type}, expected list<float32>"
        )
    lengths = pc.list_value_length(emb).to_numpy(zero_copy_only=False)
    if len(lengths) == 0:
        raise AudiorecError(f"item-embedding table {path} has no rows")
    if (lengths != lengths[0]).any():
        raise AudiorecError(
            f"item-embedding table {path}: embeddings have lengths "
            f"{sorted(set(lengths.tolist()))[:5]}, expected one fixed dimension"
        )
    ids = table.column("item_id").to_numpy(zero_copy_only=False)
    if len(set(ids)) != len(ids):
        raise AudiorecError(f"item-embedding table {path}: item_id values repeat")
    vectors = pc.list_flatten(emb).to_numpy(zero_copy_only=False).astype(np.float32)
    version = "unversioned"
    if "model_version" in table.column_names and table.num_rows:
        version = str(table.column("model_version")[0].as_py())
    return ItemEmbeddings(ids, vectors.reshape(len(ids), int(lengths[0])), version)

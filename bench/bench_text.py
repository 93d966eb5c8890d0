"""Benchmark: text-embedding throughput per precision, and how far bf16 moves the vectors.

    .venv/bin/python bench/bench_text.py --world runs/demo/world [--n 4096]

Encodes the first ``n`` items' texts (title + description, as the pipeline does) with the
packaged MiniLM at fp32 and under bfloat16 autocast (the pipeline's "bf16"), after a
one-batch warm-up each, and prints items/s, the speed-up, and the cosine between each
item's two vectors (mean, min) plus the overlap of each item's 10 nearest neighbours.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pyarrow.parquet as pq

from training.text.embed import item_texts, precision_context
from training.text.model import load_text_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", required=True)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()
    items = pq.read_table(
        f"{args.world}/items.parquet", columns=["item_id", "title", "description"]
    )
    texts = item_texts(items.slice(0, args.n))
    out, vecs = {}, {}
    for precision in ("fp32", "bf16"):
        model = load_text_model()
        with precision_context(precision):
            model.encode(texts[: args.batch], batch_size=args.batch)
            t0 = time.perf_counter()
            v = model.encode(texts, batch_size=args.batch, normalize_embeddings=True)
            s = time.perf_counter() - t0
        vecs[precision] = v / np.linalg.norm(v, axis=1, keepdims=True)
        out[precision] = {"seconds": round(s, 1), "items_per_s": round(len(texts) / s, 1)}
    a, b = vecs["fp32"], vecs["bf16"]
    cos = (a * b).sum(1)
    k = 10
    na = np.argsort(-(a @ a.T), axis=1)[:, 1 : k + 1]
    nb = np.argsort(-(b @ b.T), axis=1)[:, 1 : k + 1]
    overlap = np.mean([len(set(x) & set(y)) / k for x, y in zip(na, nb)])
    out["speedup_bf16"] = round(out["fp32"]["seconds"] / out["bf16"]["seconds"], 2)
    out["cosine_fp32_bf16"] = {
        "mean": round(float(cos.mean()), 4),
        "min": round(float(cos.min()), 4),
    }
    out["neighbours_at_10_overlap"] = round(float(overlap), 3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

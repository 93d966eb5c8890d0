"""What a published title costs: embedding it (RecordItems), and the live overlay's exact
scan on every Recommend of its type.

    .venv/bin/python bench/bench_live.py --workdir runs/demo [--out F.json]

On the work directory's current version (published with its live export): the first
title (the encoder's load included), then per-title embedding time over 50 titles of the
catalogue's own texts (text encoder, HGNN self path, item tower); then, with 0, 100, 1,000
and 10,000 (the default bound) live titles of one type, the overlay's search for one user
query, in microseconds (median of 2,000 calls). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--out")
    args = p.parse_args()

    from audiorec.artifact import current_dir, read_manifest
    from serving.live import LiveEntry, LiveItems, LiveModels, NewItem

    directory = current_dir(args.workdir)
    manifest = read_manifest(directory)
    models = LiveModels(directory, manifest)
    items = pq.read_table(directory.parent.parent / "world" / "items.parquet").slice(0, 51)
    rows = items.to_pylist()
    t0 = time.perf_counter()
    models.embed(NewItem("b-first", rows[0]["item_type"], rows[0]["title"], rows[0]["description"]))
    first_ms = (time.perf_counter() - t0) * 1e3
    per = []
    for i, r in enumerate(rows[1:]):
        t0 = time.perf_counter()
        models.embed(
            NewItem(
                f"b{i}", r["item_type"], r["title"], r["description"], r["language"], r["genre"]
            )
        )
        per.append((time.perf_counter() - t0) * 1e3)
    rng = np.random.default_rng(0)
    dim, kind = manifest.dim, manifest.item_types[0]
    query = rng.standard_normal(dim).astype(np.float32)
    search_us = {}
    for n in (0, 100, 1000, 10_000):
        live = LiveItems(manifest.item_types, dim, max_items=max(n, 1))
        vecs = rng.standard_normal((n, dim)).astype(np.float32)
        for j in range(n):
            live.add(LiveEntry(NewItem(f"l{j}", kind, "t"), vecs[j], vecs[j][:4]))
        times = []
        for _ in range(2000):
            t0 = time.perf_counter()
            live.search(query, 10, kind)
            times.append(time.perf_counter() - t0)
        search_us[str(n)] = round(float(np.median(times)) * 1e6, 1)
    out = {
        "command": f"bench/bench_live.py --workdir {args.workdir}",
        "date": date.today().isoformat(),
        "version": manifest.version,
        "first_title_ms_with_load": round(first_ms, 1),
        "title_ms_p50": round(float(np.median(per)), 2),
        "title_ms_p95": round(float(np.percentile(per, 95)), 2),
        "overlay_search_us_by_live_titles": search_us,
    }
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()

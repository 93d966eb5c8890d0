"""Bench helper: re-issue a published version under a new name, in today's layout.

    PYTHONPATH=.:bench .venv/bin/python bench/version_copy.py --workdir W --version V
        [--name NEW] [--routes-from N] [--retower]

Copies ``V`` (its files unchanged) and adds what a publish writes today but ``V`` lacks:
the per-user lookup (``lookup/``, audiorec/lookup.py) and the item vectors file
(``item_vectors.npy``, items.parquet's vector column as one float32 array). With
``--routes-from N``, each inverted-list index gets the routes a publish now learns
(audiorec/routed_index.py) from ``N`` real users: their served vectors (online features
through the version's tower), drawn with another seed than the users
bench_index_methods.py and bench_index_scale.py measure on, and with those users left
out. The manifest is re-signed under the
new name; ``current`` does not move. With ``--retower``, the copy's user tower (SavedModel and
ONNX) is exported again by today's code from the work directory's tower checkpoint
(``towers/last``: the same weights, today's graph), and the copy is refused unless its
ONNX tower answers as the version's own within 1e-5 on sampled inputs (every vocabulary
entry, unseen and empty strings, missing numbers and vectors). What it is for:
benchmarking a hot swap or a start-up at a scale whose pipeline takes hours (the 1M world)
without running it again (a daily publish at that scale is a version of the same size and
layout), and serving such a version with a faster graph of the same tower.
"""

from __future__ import annotations

import argparse
import shutil
import time
from argparse import Namespace
from pathlib import Path

import numpy as np

from audiorec import manifest as base
from audiorec.artifact import VECTORS_FILE, artifacts_root, new_version_name, read_manifest
from audiorec.lookup import DIRECTORY, lookup_of_version, write_lookup
from audiorec.publish import staged_directory


def add_routes(args, directory: Path, manifest) -> dict:
    """Each inverted-list index of the copy in ``directory`` rebuilt as a routed one over
    its own inner index; returns the manifest's new ``indexes``."""
    from bench_index_methods import queries_of, route_queries_of  # bench/: the script's

    from audiorec.hnsw_index import exact_top_k, recall_at_k
    from audiorec.ivf_index import IVFIndex
    from audiorec.routed_index import RoutedIndex

    opts = Namespace(workdir=args.workdir, online="sqlite", redis="", users=3000)
    drawn = queries_of(opts, directory)  # the copy's own tower and vectors
    art, tune = drawn.art, drawn.tune
    queries = route_queries_of(drawn, args.routes_from)
    indexes = dict(manifest.indexes)
    for kind, info in manifest.indexes.items():
        inner = art.indexes[kind]
        if not isinstance(inner, IVFIndex) or not inner.lists:
            continue
        vectors = np.ascontiguousarray(art.vectors[art.label_rows[kind]])
        routed = RoutedIndex.build(vectors, inner, queries)
        shutil.rmtree(directory / info.path)
        routed.save(directory / info.path)
        recall = recall_at_k(routed.search(tune, 10)[0], exact_top_k(vectors, tune, 10))
        indexes[kind] = info.model_copy(
            update={"method": "routed", "routes": routed.routes, "recall_at_10": round(recall, 4)}
        )
        print(f"{kind}: {routed.routes} routes, {len(routed.labels):,} listed, "
              f"recall@10 {recall:.4f} on {len(tune)} other users")  # fmt: skip
    return indexes


def retower(workdir: str, directory: Path, manifest) -> float:
    """The user tower of the copy in ``directory`` exported again from the checkpoint's
    weights; returns the largest difference from the version's own ONNX tower."""
    import json

    import onnxruntime as ort

    from audiorec.errors import ContractError
    from audiorec.tower_inputs import InputSpec
    from training.release.onnx_export import check_onnx, export_onnx, probe_inputs
    from training.twotower.export import export_user_tower
    from training.twotower.towers import build_tower

    checkpoint = Path(workdir) / "towers" / "last"
    saved = json.loads((checkpoint / "manifest.json").read_text())
    key, specs = saved["key"], list(manifest.user_features)
    if [InputSpec(**s) for s in key["user_specs"]] != specs:
        raise SystemExit(f"{checkpoint}: its user features are not the version's")
    tower = build_tower(
        specs, saved["user_stats"], key["layers"], key["string_embedding_dim"],
        key.get("ignored_user") or (), "user_tower",
    )  # fmt: skip
    tower.load_weights(checkpoint / "user.weights.h5")
    before = ort.InferenceSession(str(directory / "user_tower.onnx"))
    shutil.rmtree(directory / "user_tower")
    export_user_tower(tower, specs, directory / "user_tower", bool(manifest.model.get("prior")))
    export_onnx(directory / "user_tower", directory / "user_tower.onnx")
    inputs = probe_inputs(specs, saved["user_stats"])
    check_onnx(directory / "user_tower", directory / "user_tower.onnx", inputs)
    after = ort.InferenceSession(str(directory / "user_tower.onnx"))
    want, got = (s.run(["user_vector"], inputs)[0] for s in (before, after))
    diff = float(np.abs(want - got).max())
    if not diff <= 1e-5:
        raise ContractError(f"the re-exported tower differs from the version's by {diff:.2e}")
    print(f"user tower re-exported: largest difference {diff:.2e} on {len(want)} rows")
    return diff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--name", help="the copy's name (default: a new version name)")
    ap.add_argument("--routes-from", type=int, default=0, help="users the routes learn from")
    ap.add_argument("--retower", action="store_true", help="the user tower from today's code")
    args = ap.parse_args()
    source = artifacts_root(args.workdir) / args.version
    manifest = read_manifest(source)
    name = args.name or new_version_name(args.workdir)
    started = time.perf_counter()
    with staged_directory(artifacts_root(args.workdir) / name) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        data = dict(manifest.data)
        if not (tmp / DIRECTORY).is_dir():
            lookup = lookup_of_version(tmp)
            write_lookup(tmp, lookup)
            data["lookup_users"] = len(lookup.users)
        if not (tmp / VECTORS_FILE).is_file():
            import pyarrow.parquet as pq

            column = pq.read_table(tmp / "items.parquet", columns=["vector"]).column("vector")
            vectors = np.stack(column.to_numpy(zero_copy_only=False)).astype(np.float32)
            np.save(tmp / VECTORS_FILE, vectors)
        update: dict = {"version": name, "data": data}
        if args.retower:
            retower(args.workdir, tmp, manifest)
        if args.routes_from:
            update["indexes"] = add_routes(args, tmp, manifest)
        base.write_manifest(tmp, manifest.model_copy(update=update))
    read_manifest(artifacts_root(args.workdir) / name)
    print(f"{args.version} -> {name} ({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()

"""Benchmark: the pipeline on the local engine against the Ray engine, step by step.

    .venv/bin/python bench/bench_engine.py --root runs/bench-engine
    .venv/bin/python bench/bench_engine.py --root runs/bench-engine --users 0,100000

Per world (0: the demo world, seed 7, ending yesterday; N: a world of N users in the large
world's proportions, bench_pipeline.world_for), one backfill per engine from an empty
work directory, each in its own process, with the demo's HGNN settings; the Ray engine is
a local instance bounded to this machine (all its cores, a 512 MiB object store). Prints
wall time per step for both engines and the ratio (ray / local: above 1 is overhead), the
driver's peak RSS (Ray's workers are processes of their own, not counted), and the
agreement of the results: HGNN embeddings' mean cosine, the towers' validation recall.
Results go to ``--root``/engine.json.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from bench_pipeline import run_once, world_for

DEMO_HGNN = {"max_epochs": 8, "patience": 3, "max_steps_per_epoch": 120, "batch_size": 256}


def demo_world(root: Path) -> Path:
    from training.synth import WorldConfig, generate_world

    out = root / "world-demo"
    if not (out / "_SUCCESS").is_file():
        end = datetime.now(timezone.utc).date() - timedelta(days=1)
        generate_world(
            WorldConfig.for_scale("demo", end_date=end), 7, out, overwrite=True, progress=False
        )
        (out / "_SUCCESS").write_text("")
    return out


def agreement(local_wd: Path, ray_wd: Path) -> dict:
    from audiorec.artifact import current_dir, read_manifest
    from training.data.embeddings import read_item_embeddings

    a = read_item_embeddings(local_wd / "hgnn" / "embeddings.parquet")
    b = read_item_embeddings(ray_wd / "hgnn" / "embeddings.parquet")
    cos = (a.vectors * b.vectors).sum(1) / (
        np.linalg.norm(a.vectors, axis=1) * np.linalg.norm(b.vectors, axis=1)
    )
    recall = {}
    for name, wd in (("local", local_wd), ("ray", ray_wd)):
        m = read_manifest(current_dir(wd)).metrics
        recall[name] = {k[len("val_recall_at_10_") :]: round(v, 4) for k, v in m.items()
                        if k.startswith("val_recall_at_10_")}  # fmt: skip
    return {"hgnn_cosine_mean": float(cos.mean()), "hgnn_cosine_min": float(cos.min()),
            "val_recall_at_10": recall}  # fmt: skip


def table(name: str, runs: dict) -> str:
    local, ray = runs["local"], runs["ray"]
    lines = [
        f"{name}",
        "| step | local s | ray s | ray / local |",
        "|---|---|---|---|",
    ]
    for step, s in local["seconds"].items():
        r = ray["seconds"].get(step, float("nan"))
        lines.append(f"| {step} | {s:.1f} | {r:.1f} | {r / s if s else float('nan'):.2f}x |")
    lines.append(
        f"| **total** | **{local['total_s']:.0f}** | **{ray['total_s']:.0f}** | "
        f"**{ray['total_s'] / local['total_s']:.2f}x** |"
    )
    lines.append(
        f"| driver peak RSS GiB | {max(local['peak_rss_gib'].values()):.2f} | "
        f"{max(ray['peak_rss_gib'].values()):.2f} | |"
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default="runs/bench-engine")
    ap.add_argument("--users", default="0", help="worlds: 0 = the demo world, N = N users")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    root = Path(args.root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    results = {}
    for users in (int(u) for u in args.users.split(",")):
        world = demo_world(root) if users == 0 else world_for(users, root, args.seed)
        name = "demo world" if users == 0 else f"{users:,} users"
        from training.data import Dataset

        cut = Dataset.of(world).default_cut
        runs = {}
        for engine in ("local", "ray"):
            wd = root / f"{world.name}-{engine}"
            if wd.exists():
                import shutil

                shutil.rmtree(wd)
            config = {"hgnn": DEMO_HGNN, "engine": {"kind": engine}}
            runs[engine] = run_once(world, wd, cut, config)
            print(f"{name}, {engine}: {runs[engine]['total_s']:.0f}s", flush=True)
        runs["agreement"] = agreement(root / f"{world.name}-local", root / f"{world.name}-ray")
        results[name] = runs
        print("\n" + table(name, runs))
        print(json.dumps(runs["agreement"], indent=1), flush=True)
    (root / "engine.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

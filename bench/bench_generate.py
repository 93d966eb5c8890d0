"""Benchmark: generate a world and print wall time, peak RSS and events/s.

    .venv/bin/python bench/bench_generate.py --scale large [--seed 7] [--out DIR]

Peak RSS is the maximum resident set size of this process (getrusage), which covers the
generator, the contract validation and the stats (DuckDB runs in-process).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

from training.synth import WorldConfig, generate_world


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="large", choices=("tiny", "demo", "large"))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", help="where to write (default: a temporary directory, removed)")
    args = ap.parse_args()

    tmp = None if args.out else tempfile.mkdtemp(prefix="audiorec-bench-")
    out = Path(args.out or tmp) / "world"
    cfg = WorldConfig.for_scale(args.scale)
    t0 = time.perf_counter()
    stats = generate_world(cfg, args.seed, out, overwrite=True, progress=True)
    wall = time.perf_counter() - t0
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    events = stats["summary"]["events"]
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**30
    result = {
        "scale": args.scale,
        "users": cfg.n_users,
        "audiobooks": cfg.n_audiobooks,
        "podcasts": cfg.n_podcasts,
        "events": events,
        "wall_s": round(wall, 1),
        "events_per_s": round(events / wall),
        "peak_rss_gib": round(peak_gib, 2),
        "output_gib": round(size, 2),
        "all_facts_hold": stats["all_hold"],
        "facts": {k: f["value"] for k, f in stats["facts"].items()},
    }
    print(json.dumps(result, indent=2))
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""What loading a version costs the requests a server answers meanwhile (a hot swap).

    PYTHONPATH=.:bench .venv/bin/python bench/bench_load.py --workdir W
        [--versions V1,V2] [--repeat 3] [--niced]

For each version: ``Artifact.load`` and the ``Recommender`` over it, in a process that
has already loaded one version (imports done, as a serving process's are), with the
serving process's settings (GIL switch interval 0.5 ms, one OpenMP thread). Beside the
load, a thread stands for the calls in flight: it sleeps 1 ms at a time and records how
late it wakes (a late wake-up is the GIL or the cores taken by the load). Prints, per
version, the median over ``--repeat`` loads of the wall and CPU seconds, and the wake-up
lateness's p99 and maximum with the count of wake-ups over 2 ms; ``--json`` writes them.
``--niced``: the checksums computed in a helper process at nice 19, as a server does
(their CPU is then not this process's).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np


def _load_once(directory: Path, niced: bool) -> dict[str, float]:
    from serving.artifact import Artifact
    from serving.recommender import Recommender

    late: list[float] = []
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            t = time.perf_counter()
            time.sleep(0.001)
            late.append(time.perf_counter() - t - 0.001)

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    time.sleep(0.2)
    late.clear()
    wall, cpu = time.perf_counter(), time.process_time()
    Recommender(Artifact.load(directory, niced_checks=niced), lambda user, deadline: {})
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stop.set()
    ticker.join()
    ms = np.array(late) * 1e3
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "late_p99_ms": round(float(np.percentile(ms, 99)), 3),
        "late_max_ms": round(float(ms.max()), 2),
        "late_over_2ms": int((ms > 2).sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--versions", default="", help="comma-separated (default: current)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--niced", action="store_true", help="checksums at nice 19")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    from serving.tuning import lean_imports

    lean_imports()
    import faiss

    from audiorec.artifact import artifacts_root, current_dir
    from serving.artifact import Artifact

    faiss.omp_set_num_threads(1)
    sys.setswitchinterval(0.0005)
    wd = Path(args.workdir)
    dirs = [artifacts_root(wd) / v for v in args.versions.split(",") if v] or [current_dir(wd)]
    Artifact.load(dirs[0])  # the imports and first-touch costs a serving process has paid
    out = {}
    for d in dirs:
        runs = [_load_once(d, args.niced) for _ in range(args.repeat)]
        out[d.name] = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
        out[d.name]["runs"] = runs  # type: ignore[assignment]
        m = out[d.name]
        print(
            f"{d.name}{' (niced checks)' if args.niced else ''}: load {m['wall_s']:.2f} s "
            f"wall, {m['cpu_s']:.2f} s CPU; a 1 ms "
            f"sleeper beside it woke late by p99 {m['late_p99_ms']:.2f} ms, max "
            f"{m['late_max_ms']:.2f} ms, {m['late_over_2ms']:.0f} times over 2 ms"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

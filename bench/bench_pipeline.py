"""Benchmark: `audiorec pipeline` at several scales, the backfill and the daily run.

    .venv/bin/python bench/bench_pipeline.py --scales 50000,250000,1000000 --root runs/bench
    .venv/bin/python bench/bench_pipeline.py --scales 1000000 --root runs/bench --daily

Per scale: a world of that many users (catalogue in the large world's proportion: one
audiobook per 20 users, one podcast per 5; events follow), generated once and kept under
``--root``. The backfill is the pipeline from an empty work directory with the cut one day
before the world's last day (the preset the pipeline chooses from the data's size); with
``--daily`` the daily run follows on the same work directory with the next day's cut (one
more day of events, as a deployment that appends them). Each run is its own process (so
peak RSS is that run's); per step it prints wall time, peak RSS and the dataset's events
per second of step time, then the log-log slope of total backfill time against events.
Results are appended to ``--root``/results.json; ``--chart PNG`` draws the curve.

Targets (issue 18): the large backfill at most 45 min, the daily run at most 10 min, peak
RSS at most 12 GiB, slope at most 1.1.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

TARGETS = {"backfill_s": 45 * 60, "daily_s": 10 * 60, "rss_gib": 12.0, "slope": 1.1}


def world_for(users: int, root: Path, seed: int) -> Path:
    from training.synth import WorldConfig, generate_world

    out = root / f"world-{users}"
    if (out / "_SUCCESS").is_file():
        return out
    cfg = WorldConfig.for_scale(
        "large",
        n_users=users,
        n_audiobooks=max(100, users // 20),
        n_podcasts=max(400, users // 5),
        chunk_users=min(50_000, max(1_000, users // 10)),
    )
    generate_world(cfg, seed, out, overwrite=True, progress=False)
    (out / "_SUCCESS").write_text("")
    return out


def _run(world: str, workdir: str, cut_iso: str, out: str, config: dict) -> None:
    """One pipeline run in this (child) process; its report to ``out`` as JSON."""
    from datetime import datetime

    from audiorec.config import validated
    from training.pipeline import PipelineConfig, run_pipeline

    t0 = time.perf_counter()
    report = run_pipeline(
        world, workdir, validated(PipelineConfig, config), cut=datetime.fromisoformat(cut_iso)
    )
    Path(out).write_text(
        json.dumps(
            {
                "version": report.version,
                "preset": report.preset,
                "seconds": report.seconds,
                "peak_rss_gib": report.peak_rss_gib,
                "total_s": round(time.perf_counter() - t0, 1),
            }
        )
    )


def run_once(world: Path, workdir: Path, cut, config: dict) -> dict:
    out = workdir.parent / f"{workdir.name}-{cut:%Y%m%d}.json"
    proc = mp.get_context("spawn").Process(
        target=_run, args=(str(world), str(workdir), cut.isoformat(), str(out), config)
    )
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise SystemExit(f"pipeline run failed (exit {proc.exitcode}): {world} cut {cut:%Y-%m-%d}")
    return json.loads(out.read_text())


def table(rows: list[dict]) -> str:
    lines = [
        "| scale | run | step | wall s | peak RSS GiB | events/s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        for step, s in r["seconds"].items():
            rate = f"{r['events'] / s:,.0f}" if s > 0 else ""
            lines.append(
                f"| {r['users']:,} users | {r['run']} | {step} | {s:.1f} | "
                f"{r['peak_rss_gib'].get(step, float('nan')):.2f} | {rate} |"
            )
        lines.append(
            f"| {r['users']:,} users | {r['run']} | **total** | **{r['total_s']:.0f}** | "
            f"**{max(r['peak_rss_gib'].values(), default=float('nan')):.2f}** | "
            f"{r['events'] / r['total_s']:,.0f} |"
        )
    return "\n".join(lines)


def slope(rows: list[dict]) -> float | None:
    pts = sorted({(r["events"], r["total_s"]) for r in rows if r["run"] == "backfill"})
    if len(pts) < 2:
        return None
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


def chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    back = sorted((r for r in rows if r["run"] == "backfill"), key=lambda r: r["events"])
    steps = list(back[-1]["seconds"]) if back else []
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    ev = [r["events"] for r in back]
    for step in steps:
        ax.plot(ev, [max(r["seconds"].get(step, 0), 0.1) for r in back], marker="o", label=step)
    ax.plot(ev, [r["total_s"] for r in back], marker="s", color="black", lw=2, label="total")
    if back:  # the linear reference through the smallest run
        ax.plot(
            ev,
            [back[0]["total_s"] * e / ev[0] for e in ev],
            ls=":",
            color="grey",
            label="linear in events",
        )
    for i, r in enumerate(d for d in rows if d["run"] == "daily"):
        ax.scatter(
            [r["events"]],
            [r["total_s"]],
            marker="*",
            s=150,
            color="tab:red",
            zorder=5,
            label="daily run (total)" if i == 0 else None,
        )
    ax.axhline(TARGETS["backfill_s"], color="tab:red", ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("events in the dataset")
    ax.set_ylabel("wall seconds")
    s = slope(rows)
    ax.set_title("audiorec pipeline: backfill time per step" + (f" (slope {s:.2f})" if s else ""))
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", default="50000,250000,1000000", help="users per world")
    ap.add_argument("--root", default="runs/bench", help="worlds, work directories, results")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--daily", action="store_true", help="the daily run after the largest")
    ap.add_argument("--config", default="{}", help="PipelineConfig overrides (JSON)")
    ap.add_argument("--chart", help="write the chart to this PNG")
    ap.add_argument("--report-only", action="store_true", help="print results.json's table")
    args = ap.parse_args()

    root = Path(args.root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    results_path = root / "results.json"
    rows = json.loads(results_path.read_text()) if results_path.is_file() else []
    scales = [int(s) for s in args.scales.split(",") if s]
    for users in [] if args.report_only else scales:
        from training.data import Dataset

        t0 = time.perf_counter()
        world = world_for(users, root, args.seed)
        data = Dataset.of(world)
        events = int(data.info.rows["events"])
        print(
            f"\n### {users:,} users: {events:,} events (world ready in "
            f"{time.perf_counter() - t0:.0f}s)",
            flush=True,
        )
        last = data.default_cut
        work = root / f"work-{users}"
        if work.exists():
            import shutil

            shutil.rmtree(work)
        runs = [("backfill", last - timedelta(days=1))]
        if args.daily and users == max(scales):
            runs.append(("daily", last))
        for run, cut in runs:
            res = run_once(world, work, cut, json.loads(args.config))
            row = {"users": users, "events": events, "run": run, "cut": f"{cut:%Y-%m-%d}", **res}
            rows = [r for r in rows if (r["users"], r["run"]) != (users, run)] + [row]
            results_path.write_text(json.dumps(rows, indent=1))
            print(
                f"\n{run} at {users:,} users: {res['total_s']:.0f}s, peak RSS "
                f"{max(res['peak_rss_gib'].values(), default=float('nan')):.2f} GiB",
                flush=True,
            )
    rows.sort(key=lambda r: (r["users"], r["run"] != "backfill"))
    print("\n" + table(rows))
    s = slope(rows)
    if s is not None:
        print(f"\nlog-log slope of backfill time against events: {s:.2f} (target <= 1.1)")
    for r in rows:
        if r["users"] >= 1_000_000:
            key = "backfill_s" if r["run"] == "backfill" else "daily_s"
            peak = max(r["peak_rss_gib"].values(), default=0.0)
            slowest = max(r["seconds"], key=r["seconds"].get)
            verdict = (
                "met"
                if r["total_s"] <= TARGETS[key]
                else (f"MISSED by {r['total_s'] - TARGETS[key]:.0f}s (slowest step: {slowest})")
            )
            print(
                f"{r['run']} at {r['users']:,} users: {r['total_s']:.0f}s vs target "
                f"{TARGETS[key]}s: {verdict}; peak RSS {peak:.2f} GiB vs "
                f"{TARGETS['rss_gib']} GiB: {'met' if peak <= TARGETS['rss_gib'] else 'MISSED'}"
            )
    if args.chart:
        chart(rows, Path(args.chart))
        print(f"chart: {args.chart}")


if __name__ == "__main__":
    main()

"""The validation window scored as a hold-out, by models that never saw it.

    python bench/validation_check.py --data runs/ciao/data --cut 2009-02-08 \
        --window-start 2008-02-09 --config docs/results/ciao-levers/check.json \
        --workdir runs/ciao-levers

Why: the evaluation chooses settings and levers on the towers' validation slice (the
last ``two_tower.validation_days`` before the cut), but the HGNN under the 2T-HGNN rows is
trained on the co-listening graph through the cut, the slice's edges included. Its
validation scores are therefore optimistic, and more so the better an HGNN fits its
edges: a lever that makes it fit them better can win on a biased yardstick. This check
removes every row of the dataset from ``--cut`` on (the real hold-out is gone, never
read) and evaluates with the hold-out starting at ``--window-start``: its hold-out is the
real validation window, and every model, the HGNN included, is trained on the events
before it. Rows to compare are named in the config's ``ablations``.

Writes WORKDIR/data (the truncated copy), WORKDIR/eval and WORKDIR/report (report.md and
metrics.json, as ``audiorec evaluate``).
"""

from __future__ import annotations

import argparse
import json
import shutil
from datetime import date, datetime, time, timezone
from pathlib import Path


def truncate(src: Path, dst: Path, cut: datetime) -> dict[str, tuple[int, int]]:
    """Copy the dataset ``src`` to ``dst`` without its rows from ``cut`` on."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from training.data.contract import CONTRACT

    dst.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, spec in CONTRACT.items():
        # each contract table has one time column: its rows at or after the cut go
        (column,) = (c.name for c in spec.columns if c.kind == "timestamp")
        table = pq.read_table(src / spec.file)
        col = table.column(column)
        kept = table.filter(pc.less(col, pa.scalar(cut, col.type)))
        pq.write_table(kept, dst / spec.file)
        counts[name] = (table.num_rows, kept.num_rows)
    for extra in src.glob("*.json"):
        shutil.copy(extra, dst / extra.name)
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a dataset directory (data contract)")
    ap.add_argument(
        "--cut", required=True, type=date.fromisoformat, help="the real hold-out's start"
    )
    ap.add_argument("--window-start", required=True, type=date.fromisoformat)
    ap.add_argument("--config", help="EvaluationConfig overrides (JSON)")
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args()

    from audiorec.config import load_overrides, merge, validated
    from training.evaluation.config import EvaluationConfig
    from training.evaluation.report import write_report
    from training.evaluation.run import run_evaluation

    wd = Path(args.workdir)
    cut = datetime.combine(args.cut, time(), tzinfo=timezone.utc)
    for name, (before, after) in truncate(Path(args.data), wd / "data", cut).items():
        print(f"{name}: {before:,} rows -> {after:,} before {args.cut}")
    over = merge(load_overrides(args.config), {"holdout_from": str(args.window_start)})
    cfg = validated(EvaluationConfig, over)
    res = run_evaluation(wd / "data", wd / "eval", cfg)
    config = Path(args.config).name if args.config else "-"
    command = (
        f"python bench/validation_check.py --data {Path(args.data).name} --cut {args.cut} "
        f"--window-start {args.window_start} --config {config}"
    )
    report = write_report(res, wd / "report", command=command)
    print(f"report: {report}")
    (wd / "report" / "check.json").write_text(json.dumps(over, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Two evaluations' metrics.json compared cell by cell: is a refactor free of behaviour change?

    python bench/compare_metrics.py BEFORE/metrics.json AFTER/metrics.json [--out F.json]

Prints every (model, item type, group) HR@10 cell that differs, the count of equal ones,
and, for the cells that differ, whether the difference is inside the row's spread over
seeds (``hr@10_sd``, where the row has several seeds). Exits 0 either way: a reader judges.
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path


def cells(metrics: dict) -> dict[str, dict]:
    """``"model | type | group"`` -> that cell's metrics."""
    return {
        f"{model} | {kind} | {group}": cell
        for model, by_type in metrics["models"].items()
        for kind, by_group in by_type.items()
        for group, cell in by_group.items()
    }


def compare(before: dict, after: dict) -> dict:
    b, a = cells(before), cells(after)
    differ = {}
    for key in sorted(set(b) & set(a)):
        x, y = b[key]["hr@10"], a[key]["hr@10"]
        if x != y:
            sd = max(b[key].get("hr@10_sd", 0.0), a[key].get("hr@10_sd", 0.0))
            differ[key] = {
                "before": x,
                "after": y,
                "diff": y - x,
                "seed_sd": sd,
                "within_2sd": sd > 0 and abs(y - x) <= 2 * sd,
            }
    return {
        "cells": len(set(b) & set(a)),
        "equal": len(set(b) & set(a)) - len(differ),
        "only_before": sorted(set(b) - set(a)),
        "only_after": sorted(set(a) - set(b)),
        "differ": differ,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--out", help="write the comparison as JSON")
    p.add_argument("--what", default="", help="a sentence saying what was compared")
    args = p.parse_args()
    result = compare(
        json.loads(Path(args.before).read_text()), json.loads(Path(args.after).read_text())
    )
    print(f"{result['equal']} of {result['cells']} HR@10 cells equal")
    for key, d in result["differ"].items():
        spread = f", seeds' sd {d['seed_sd']:.4f}" if d["seed_sd"] else ""
        print(f"  {key}: {d['before']:.4f} -> {d['after']:.4f} ({d['diff']:+.4f}{spread})")
    if args.out:
        out = {"what": args.what, "date": date.today().isoformat(), **result}
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()

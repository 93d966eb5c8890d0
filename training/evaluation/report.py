"""R/report.md, R/metrics.json and the charts, in the paper's layout, paper beside ours.

Our numbers are means over seeds (with the standard deviation where there are several);
"vs 2T" is the relative change of a row's HR@10 over the 2T row, ours and the paper's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from audiorec.config import merge
from training.data.protocol import MIN_GROUP_USERS, Protocol
from training.evaluation.charts import GROUP_NAMES, panels, write_charts
from training.evaluation.claims import REFERENCE, expectations, paired_of
from training.evaluation.config import Results
from training.evaluation.intervals import RESAMPLES, paired_bootstrap

# The papers' numbers (docs/paper.md): HR@10, MRR, coverage %.
# (item type, group) -> model -> (HR@10, MRR, coverage %) as the paper reports them
PAPER: dict[tuple[str, str], dict[str, tuple[float | None, ...]]] = {
    ("audiobook", "warm"): {
        "Popularity": (0.150, 0.100, 0.0),
        "LLM-KNN": (0.164, 0.202, 54.7),
        "HGNN": (0.258, 0.224, 52.8),
        "HGNN-w-users": (0.238, 0.163, 25.3),
        "2T": (0.231, 0.173, 21.2),
        "2T-HGNN": (0.353, 0.218, 22.3),
        "2T-HGNN, no balanced sampler": (0.332, 0.214, 24.1),
        "2T-HGNN, no weak signals": (0.267, 0.182, 17.0),
        "2T-HGNN, no PP edges": (0.333, 0.210, 22.3),
        "2T-HGNN, no AA edges": (0.312, 0.198, 9.4),
        "2T-HGNN, AA-only graph": (0.329, 0.201, 22.1),
        "2T-HGNN, PP-only graph": (0.294, 0.192, 10.6),
    },
    ("audiobook", "cold"): {
        "Popularity": (0.161, 0.100, 0.0),
        "HGNN-w-users": (0.174, 0.153, 6.4),
        "2T": (0.135, 0.146, 19.3),
        "2T-HGNN": (0.200, 0.156, 12.0),
    },
    ("podcast", "all"): {
        "Popularity": (0.059, None, None),
        "2T": (0.114, 0.135, 11.4),
        "2T-HGNN": (0.123, 0.138, 20.6),
    },
}
# The rows of the main tables: the paper's, with the peers a user would try instead.
MAIN_ROWS = (
    "Popularity",
    "ALS",
    "BPR",
    "ItemKNN",
    "EASE",
    "RP3beta",
    "LLM-KNN",
    "HGNN",
    "HGNN-w-users",
    "2T",
    "2T-HGNN",
)


def layout(protocol: Protocol) -> dict[str, list[str]]:
    """item type -> its groups, in the types' order (the focus first): what the tables,
    orderings and charts are laid out by (also written to metrics.json)."""
    return {kind: list(t.groups) for kind, t in protocol.truth.items()}


def tables(groups: dict[str, list[str]]) -> list[tuple[str, str, str, bool]]:
    """(title, item type, group, ablations?) of the report's tables: one per panel, then
    the ablations on the focus type's first group."""
    out = [
        (f"{kind.capitalize()} items, {GROUP_NAMES.get(group, group)}", kind, group, False)
        for kind, group in panels(groups)
    ]
    focus = next(iter(groups))
    first = groups[focus][0] if groups[focus] else "all"
    return out + [
        (
            f"Ablations of 2T-HGNN, {focus} items, {GROUP_NAMES.get(first, first)}",
            focus,
            first,
            True,
        )
    ]


def summarize(res: Results) -> dict:
    """model -> item type -> group -> means (± sd over seeds), the HR@K curve, and
    ``paired``: the row's HR@10 minus 2T-HGNN's, user by user, with its 95% bootstrap
    interval and verdict (2T-HGNN's own entry: against 1.3 x 2T, the paper's ratio)."""
    out: dict = {}
    hits: dict = {}
    for model, kinds in res.rows.items():
        for kind, groups in kinds.items():
            for group, runs in groups.items():

                def agg(key):
                    vals = np.array([r[key] for r in runs], dtype=float)
                    return float(vals.mean()), float(vals.std()) if len(vals) > 1 else None

                entry = {
                    "users": runs[0]["users"],
                    "seeds": len(runs),
                    "hr_curve": np.mean([r["hr_curve"] for r in runs], axis=0).tolist(),
                }
                for key in ("hr@10", "mrr", "coverage"):
                    entry[key], entry[f"{key}_sd"] = agg(key)
                out.setdefault(model, {}).setdefault(kind, {})[group] = entry
                if all("hit@10" in r for r in runs):
                    hits[model, kind, group] = np.mean([r["hit@10"] for r in runs], axis=0)
    for (model, kind, group), mine in hits.items():
        ref = hits.get((REFERENCE, kind, group))
        if ref is None:
            continue
        paired = {}
        if model != REFERENCE:
            paired[REFERENCE] = paired_bootstrap(mine, ref).to_json()
        elif (two := hits.get(("2T", kind, group))) is not None:
            paired["1.3 x 2T"] = paired_bootstrap(mine, two, factor=1.3).to_json()
        out[model][kind][group]["paired"] = paired
    return out


def _fmt(mean, sd, pct=False) -> str:
    if mean is None or (isinstance(mean, float) and np.isnan(mean)):
        return "-"
    scale = 100 if pct else 1
    text = f"{mean * scale:.1f}%" if pct else f"{mean:.3f}"
    if sd is not None:
        text += f" ± {sd * scale:.1f}" if pct else f" ± {sd:.3f}"
    return text


def _paper(v, pct=False) -> str:
    return "-" if v is None else (f"{v:.1f}%" if pct else f"{v:.3f}")


def _rel(a, b) -> str:
    return (
        "-"
        if a is None or b in (None, 0) or np.isnan(a) or np.isnan(b)
        else f"{(a / b - 1) * 100:+.0f}%"
    )


def table(
    summary: dict, title: str, kind: str, group: str, ablations: bool, heading: str = "###"
) -> list[str]:
    paper = PAPER.get((kind, group), {})
    if ablations:
        models = ["2T-HGNN"] + [m for m in summary if m.startswith("2T-HGNN, ")]
    else:
        models = [
            row
            for m in MAIN_ROWS
            for row in (m, f"{m} + prior")
            if row in summary or (row == m and m in paper)
        ]
    ref = "2T-HGNN" if ablations else "2T"
    ours_ref = summary.get(ref, {}).get(kind, {}).get(group, {}).get("hr@10")
    paper_ref = paper.get(ref, (None,))[0]
    users = next(
        (
            summary[m][kind][group]["users"]
            for m in models
            if kind in summary.get(m, {}) and group in summary[m][kind]
        ),
        0,
    )
    lines = [
        f"{heading} {title} ({users:,} users)",
        "",
        f"| model | HR@10 | paper | MRR | paper | coverage | paper | HR@10 vs {ref}: "
        f"ours | paper | HR@10 - {REFERENCE}, 95% interval over users |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in models:
        s = summary.get(m, {}).get(kind, {}).get(group)
        p = paper.get(m, (None, None, None))
        if s is None:
            lines.append(
                f"| {m} | not run | {_paper(p[0])} | | {_paper(p[1])} | | "
                f"{_paper(p[2], True)} | | | |"
            )
            continue
        lines.append(
            f"| {m} | {_fmt(s['hr@10'], s['hr@10_sd'])} | {_paper(p[0])} | "
            f"{_fmt(s['mrr'], s['mrr_sd'])} | {_paper(p[1])} | "
            f"{_fmt(s['coverage'], s['coverage_sd'], True)} | {_paper(p[2], True)} | "
            f"{_rel(s['hr@10'], ours_ref)} | {_rel(p[0], paper_ref)} | {_paired_cell(m, s)} |"
        )
    return lines + [""]


def _paired_cell(model: str, entry: dict) -> str:
    if model == REFERENCE:
        return "(reference)"
    p = paired_of(entry)
    return "-" if p is None else f"{p.text()} {p.verdict}"


def selection_lines(chosen: dict, validation: str = "", heading: str = "###") -> list[str]:
    """What each model's settings were chosen as, on the validation window."""
    if not chosen:
        return []
    lines = [
        f"{heading} Settings chosen on the validation window",
        "",
        (f"Validation window: {validation}. " if validation else "")
        + "One window for every row: the towers' validation slice (the last "
        "two_tower.validation_days before the cut), each model trained on the events "
        "before it. Each model tried the same number of settings (its defaults first); the "
        "hold-out was scored once, with the chosen settings, refitted through the cut. The "
        f"criterion: HR@10 averaged over the groups that have at least {MIN_GROUP_USERS} "
        "validation users (over every group with users when none has that many). 2T and "
        "2T-HGNN are scored with their popularity prior, chosen per item type on the same "
        "window by the same criterion over the type's groups; each '+ prior' row chooses "
        "its setting and its prior that way, and Popularity (the prior alone) its "
        "half-life per item type from the prior's grid.",
        "",
        "| model | chosen | validation HR@10 (mean of groups): chosen / defaults / trials |",
        "|---|---|---|",
    ]
    for model, c in chosen.items():
        trials = c.get("trials", [])
        vals = [t["validation"] for t in trials]
        setting = ", ".join(f"{k} {v}" for k, v in c["setting"].items())
        best = next(
            (
                t["validation"]
                for t in trials
                if {k: t.get(k) for k in c["setting"]} == c["setting"]
            ),
            None,
        )
        if "validation" in c:  # Popularity and the "+ prior" rows: the prior's grid
            value = (
                f"{c['validation']:.3f}"
                + (f" / {vals[0]:.3f} / {len(vals)}" if vals else "")
                + f" on {' .. '.join(w[:10] for w in c['window'])}"
            )
        elif vals and best is not None:
            value = f"{best:.3f} / {vals[0]:.3f} / {len(vals)}"
        else:
            value = "no validation window: defaults"
        lines.append(f"| {model} | {setting} | {value} |")
    return lines


def results_lines(metrics: dict, heading: str = "###") -> list[str]:
    """The report's tables, orderings and chosen settings from a metrics.json alone, so
    that what docs/results.md shows is generated from the runs, never pasted."""
    summary, groups = metrics["models"], metrics["protocol"]["groups"]
    seeding = metrics.get("seeding", "")
    lines = [f"Produced by `{metrics['command']}`.", ""] if metrics.get("command") else []
    lines += [
        f"Protocol (docs/paper.md): {metrics['protocol']['summary']}. "
        "Targets are new starts; already streamed items are never recommended. "
        "Our values are means ± standard deviation over seeds where several ran"
        + (f" ({seeding})." if seeding else ".")
        + f" Each row's difference to {REFERENCE} is paired user by user, with a 95% "
        f"interval from a seeded bootstrap over users ({RESAMPLES:,} resamples); a row "
        "leads or trails only when its interval excludes 0, else it is level.",
        "",
    ]
    for title, kind, group, abl in tables(groups):
        if abl and not any(m.startswith("2T-HGNN, ") for m in summary):
            continue
        lines += table(summary, title, kind, group, abl, heading)
    skipped = metrics.get("skipped", {})
    if skipped:
        lines += [f"Not run: {'; '.join(f'{m} ({why})' for m, why in skipped.items())}.", ""]
    lines += [f"{heading} The paper's expected orderings", ""]
    lines += [
        f"- {'holds' if ok else 'does NOT hold'}: {text}" + (f" ({why})" if why else "")
        for text, ok, why in expectations(summary, groups)
    ]
    return lines + [
        "",
        *selection_lines(metrics.get("selection", {}), metrics.get("validation", ""), heading),
    ]


def write_report(res: Results, out: str | Path, command: str = "") -> Path:
    """R/metrics.json (everything the report shows, with the ``command`` that produced
    it), R/report.md rendered from it, the charts, and R/selected.json (the winner's
    pipeline settings)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(res)
    metrics = {
        "protocol": {
            "cut": str(res.protocol.cut),
            "end": str(res.protocol.end),
            "summary": res.protocol.summary(),
            "groups": layout(res.protocol),
        },
        "seeding": res.seeding,
        "validation": res.validation,
        "seconds": res.seconds,
        "models": summary,
        "selection": res.chosen,
        "skipped": res.skipped,
        "command": command,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    metrics = json.loads((out / "metrics.json").read_text())  # as a reader will see it
    lines = ["# Offline evaluation", "", *results_lines(metrics)]
    chosen = res.chosen.get("2T-HGNN", {}).get("setting")
    if chosen:
        # what to serve: `audiorec pipeline --config selected.json` trains the winner
        pipeline = merge(res.pipeline, {"two_tower": chosen})
        (out / "selected.json").write_text(json.dumps(pipeline, indent=2) + "\n")
        lines += [
            "",
            "The evaluated pipeline settings with the chosen 2T-HGNN settings are in "
            "`selected.json`: `audiorec pipeline --config selected.json` publishes "
            "that model, so what won here is what `audiorec serve` answers with.",
        ]
    lines += [
        "",
        "Charts: `hr_at_k.png` (HR@K, K = 1..100), `coverage_vs_hr.png`.",
        "",
        "Time per model (s): " + ", ".join(f"{k} {v:.0f}" for k, v in res.seconds.items()),
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    write_charts(summary, layout(res.protocol), out)
    return out / "report.md"

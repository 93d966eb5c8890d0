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
from training.evaluation.config import Results
from training.evaluation.intervals import RESAMPLES, Paired, paired_bootstrap

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
GROUP_NAMES = {"warm": "warm-start users", "cold": "cold-start users", "all": "all users"}


def layout(protocol: Protocol) -> dict[str, list[str]]:
    """item type -> its groups, in the types' order (the focus first): what the tables,
    orderings and charts are laid out by (also written to metrics.json)."""
    return {kind: list(t.groups) for kind, t in protocol.truth.items()}


def panels(groups: dict[str, list[str]]) -> list[tuple[str, str]]:
    """(item type, group) of every table: the focus type's warm and cold groups (the
    paper's audiobooks), then one group per other type."""
    return [(kind, group) for kind, gs in groups.items() for group in gs]


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


REFERENCE = "2T-HGNN"  # every row's paired interval is against it


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


def _paired(entry: dict, against: str = REFERENCE) -> Paired | None:
    p = entry.get("paired", {}).get(against)
    return None if p is None else Paired(p["diff"], p["lo"], p["hi"], p["users"])


def _paired_cell(model: str, entry: dict) -> str:
    if model == REFERENCE:
        return "(reference)"
    p = _paired(entry)
    return "-" if p is None else f"{p.text()} {p.verdict}"


def expectations(summary: dict, layout: dict[str, list[str]]) -> list[tuple[str, bool, str]]:
    """(the paper's ordering, whether it holds here, the numbers behind it), on the focus
    type (the paper's audiobooks) warm and cold, and on every other type (podcasts).

    Each is read from the paired 95% interval over users, never from the means alone: "A
    beats B" holds when A - B's interval lies above 0; "A >= B" when it does not lie below
    0 (level counts)."""
    focus = next(iter(layout))
    groups = layout[focus]
    warm_g = "warm" if "warm" in groups else next(iter(groups), "all")

    def entry(model, kind, group) -> dict:
        return summary.get(model, {}).get(kind, {}).get(group, {})

    def gap(other: str, kind: str, group: str) -> tuple[str, str]:
        """(verdict of 2T-HGNN against ``other``, the numbers): "leads" = 2T-HGNN ahead."""
        e, ref = entry(other, kind, group), entry(REFERENCE, kind, group)
        p = _paired(e)
        if p is None or not ref:
            return "not scored", f"{other} not scored"
        flip = {"leads": "trails", "trails": "leads"}.get(p.verdict, p.verdict)
        mine = Paired(-p.diff, -p.hi, -p.lo, p.users)
        return flip, (
            f"{REFERENCE} {ref['hr@10']:.3f} vs {other} {e['hr@10']:.3f}: difference "
            f"{mine.text()} over {p.users:,} users, {REFERENCE} {flip}"
        )

    main = [m for m in summary if not m.startswith(REFERENCE + ", ") and m != REFERENCE]
    where = f"{warm_g}-start {focus} items" if warm_g != "all" else f"{focus} items"
    verdicts = {m: gap(m, focus, warm_g) for m in main}
    scored = {m: v for m, v in verdicts.items() if v[0] != "not scored"}
    # the closest competitor: the row whose interval reaches highest against 2T-HGNN
    closest = max(
        scored,
        key=lambda m: _paired(entry(m, focus, warm_g)).hi,  # type: ignore[union-attr]
        default=None,
    )
    out = [
        (
            f"{where}: 2T-HGNN leads every other row",
            bool(scored) and all(v[0] == "leads" for v in scored.values()),
            scored[closest][1] if closest else "",
        )
    ]
    ratio = _paired(entry(REFERENCE, focus, warm_g), "1.3 x 2T")
    out.append(
        (
            f"{where}: 2T-HGNN HR@10 >= 1.3 x 2T's",
            ratio is not None and ratio.verdict in ("leads", "level"),
            f"2T-HGNN - 1.3 x 2T {ratio.text()}, {ratio.verdict}" if ratio else "",
        )
    )
    if "cold" in groups:
        v2, vp = gap("2T", focus, "cold"), gap("Popularity", focus, "cold")
        out.append(
            (
                f"cold-start {focus} items: 2T-HGNN beats 2T and Popularity",
                v2[0] == "leads" and vp[0] == "leads",
                f"{v2[1]}; {vp[1]}",
            )
        )
    for kind in list(layout)[1:]:
        for group in layout[kind]:
            v = gap("2T", kind, group)
            out.append((f"{kind} items: 2T-HGNN >= 2T", v[0] in ("leads", "level"), v[1]))
    for m in (m for m in summary if m.startswith(REFERENCE + ", ")):
        v = gap(m, focus, warm_g)
        out.append((f"ablation '{m[9:]}' is below the full model", v[0] == "leads", v[1]))
    return out


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
    _charts(summary, layout(res.protocol), out)
    return out / "report.md"


def _charts(summary: dict, groups: dict[str, list[str]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = panels(groups)
    fig, axes = plt.subplots(1, len(shown), figsize=(4.7 * len(shown), 4), squeeze=False)
    for ax, (kind, group) in zip(axes[0], shown):
        for m, kinds in summary.items():
            if m.startswith("2T-HGNN, ") or group not in kinds.get(kind, {}):
                continue
            curve = kinds[kind][group]["hr_curve"]
            ax.plot(range(1, len(curve) + 1), curve, label=m)
        ax.set(
            xscale="log",
            xlabel="K",
            ylabel="HR@K",
            title=f"{kind} items, {GROUP_NAMES.get(group, group)}",
        )
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "hr_at_k.png", dpi=110)
    plt.close(fig)
    kind, group = shown[0]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for m, kinds in summary.items():
        s = kinds.get(kind, {}).get(group)
        if s:
            ax.scatter(s["coverage"] * 100, s["hr@10"])
            ax.annotate(m, (s["coverage"] * 100, s["hr@10"]), fontsize=7)
    ax.set(
        xlabel="coverage of the top 100 (%)",
        ylabel="HR@10",
        title=f"{kind} items, {GROUP_NAMES.get(group, group)}: accuracy vs coverage",
    )
    fig.tight_layout()
    fig.savefig(out / "coverage_vs_hr.png", dpi=110)
    plt.close(fig)

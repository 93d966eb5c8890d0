"""The paper's claims checked on a run: each a sentence, whether it holds, and why, read
from the rows' paired intervals against 2T-HGNN (a claim holds only where the interval
says so, never from the means alone)."""

from __future__ import annotations

from training.evaluation.intervals import Paired

REFERENCE = "2T-HGNN"  # every row's paired interval is against it


def paired_of(entry: dict, against: str = REFERENCE) -> Paired | None:
    p = entry.get("paired", {}).get(against)
    return None if p is None else Paired(p["diff"], p["lo"], p["hi"], p["users"])


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
        p = paired_of(e)
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
        key=lambda m: paired_of(entry(m, focus, warm_g)).hi,  # type: ignore[union-attr]
        default=None,
    )
    out = [
        (
            f"{where}: 2T-HGNN leads every other row",
            bool(scored) and all(v[0] == "leads" for v in scored.values()),
            scored[closest][1] if closest else "",
        )
    ]
    ratio = paired_of(entry(REFERENCE, focus, warm_g), "1.3 x 2T")
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
        if m[9:].startswith("+ "):  # a lever the served model lacks: no claim to check
            continue
        v = gap(m, focus, warm_g)
        out.append((f"ablation '{m[9:]}' is below the full model", v[0] == "leads", v[1]))
    return out

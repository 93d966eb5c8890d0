"""The evaluation's charts: HR@K per table (``hr_at_k.png``) and accuracy against
coverage on the focus type's first group (``coverage_vs_hr.png``), from the report's
summary."""

from __future__ import annotations

from pathlib import Path

GROUP_NAMES = {"warm": "warm-start users", "cold": "cold-start users", "all": "all users"}


def panels(groups: dict[str, list[str]]) -> list[tuple[str, str]]:
    """(item type, group) of every table: the focus type's warm and cold groups (the
    paper's audiobooks), then one group per other type."""
    return [(kind, group) for kind, gs in groups.items() for group in gs]


def write_charts(summary: dict, groups: dict[str, list[str]], out: Path) -> None:
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

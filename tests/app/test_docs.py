"""docs/results.md is generated from the runs' metrics.json (make docs), never stale."""

from __future__ import annotations

from pathlib import Path

from app.docs import render

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_results_page_is_generated_from_the_metrics():
    runs = [p for p in (DOCS / "results").iterdir() if (p / "metrics.json").is_file()]
    assert {p.name for p in runs} >= {"demo", "ciao"}
    assert (DOCS / "results.md").read_text() == render(DOCS / "results"), (
        "docs/results.md is stale: run make docs"
    )


def test_every_doc_link_resolves():
    import re

    root = DOCS.parent
    for page in [root / "README.md", *DOCS.glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+\.md)\)", page.read_text()):
            assert (page.parent / target).is_file(), f"{page.name} links to missing {target}"

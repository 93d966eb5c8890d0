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


SKIP = {".venv", "runs", ".git", ".pytest_cache", ".mypy_cache", ".ruff_cache"}


def repository_files(*suffixes: str) -> list[Path]:
    root = DOCS.parent
    return [
        p
        for p in root.rglob("*")
        if p.is_file()
        and (p.suffix in suffixes or p.name in suffixes)
        and not SKIP & set(p.relative_to(root).parts)
    ]


def test_every_relative_link_in_the_markdown_resolves_inside_the_repository():
    import re

    root = DOCS.parent
    # a run's about.md is a fragment of docs/results.md (make docs): its links are docs/'s
    pages = [p for p in repository_files(".md") if p.parent.parent != DOCS / "results"]
    for page in pages:
        for target in re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", page.read_text()):
            path = (page.parent / target).resolve()
            where = page.relative_to(root)
            assert path.is_relative_to(root), f"{where} links outside the repository: {target}"
            assert path.exists(), f"{where} links to missing {target}"


def test_no_file_refers_to_a_document_the_repository_does_not_hold():
    """The project's own notes beside a checkout are not the user's: every reason is in
    the repository (docs/paper.md, docs/stack-notes.md)."""
    files = repository_files(".py", ".md", ".toml", ".yaml", ".proto", ".cfg", "Makefile", "run")
    # built from parts, so that this file names none of them either
    names = [f"{stem}.md" for stem in ("PAPER", "STACK", "DESIGN")]
    for path in files:
        text = path.read_text(errors="replace")
        for name in names:
            assert name not in text, f"{path.relative_to(DOCS.parent)} refers to {name}"


def test_package_readmes_are_generated_from_the_docstrings():
    from app.docs import PACKAGES, package_readme

    root = DOCS.parent
    for package in PACKAGES:
        assert (root / package / "README.md").read_text() == package_readme(package), (
            f"{package}/README.md is stale: run make docs"
        )


def test_hand_written_readmes_name_every_rpc_and_feature_service():
    import re

    root = DOCS.parent
    proto = (root / "protos" / "audiorec" / "v1" / "recommender.proto").read_text()
    rpcs = re.findall(r"^\s*rpc (\w+)\(", proto, flags=re.M)
    assert len(rpcs) >= 4
    readme = (root / "protos" / "README.md").read_text()
    assert [r for r in rpcs if f"`{r}`" not in readme] == []
    services = re.findall(
        r'^\w+ = FeatureService\(\s*name="(\w+)"',
        (root / "feature_repo" / "feature_services.py").read_text(),
        flags=re.M,
    )
    assert len(services) >= 3
    readme = (root / "feature_repo" / "README.md").read_text()
    assert [s for s in services if f"`{s}`" not in readme] == []

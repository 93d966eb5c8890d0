"""The import graph: layers read top to bottom, and nothing imports in a circle.

Layers (README "Layout"): ``app/`` (the CLI, the demo) on top, imported by nothing;
``inspector/`` (the web pages) below it, a client of serving, importing nothing from
training; ``training/`` and ``serving/`` in the middle, serving importing nothing from training;
the base ``audiorec/`` at the bottom, importing neither. Inside training, its
sub-packages in the order of ``TRAINING_LAYERS``. Every import statement counts,
also the ones inside functions (a lazy import is still an arrow).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "audiorec", "training", "serving", "inspector")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    """module -> the project's modules it imports."""
    files = {
        _module(p): p
        for pkg in PACKAGES
        for p in (ROOT / pkg).rglob("*.py")
        if "v1" not in p.relative_to(ROOT).parts
    }
    return {m: {i for i in _imports(p) if i in files} for m, p in files.items()}


def _arrows(graph: dict[str, set[str]], src: str, dst: str) -> list[str]:
    return sorted(
        f"{m} -> {i}"
        for m, deps in graph.items()
        if m.split(".")[0] == src
        for i in deps
        if i.split(".")[0] == dst
    )


@pytest.mark.parametrize(
    "src,dst",
    [
        ("audiorec", "training"),
        ("audiorec", "serving"),
        ("audiorec", "app"),
        ("serving", "training"),
        ("serving", "app"),
        ("training", "app"),
        ("inspector", "training"),
        ("inspector", "app"),
        ("audiorec", "inspector"),
        ("serving", "inspector"),
        ("training", "inspector"),
    ],
)
def test_no_arrow_up_or_across(graph, src, dst):
    assert _arrows(graph, src, dst) == []


# training's own sub-packages, bottom to top: the order data flows in a daily run, with
# the shared pieces below (data: the contract, ids, embedding tables, the protocol;
# engine: where steps run). A module imports only from its own sub-package or below.
TRAINING_LAYERS = (
    "data",
    "engine",
    "text",
    "graph",
    "hgnn",
    "features",
    "twotower",
    "release",
    "synth",
    "presets",
    "steps",
    "pipeline",
    "evaluation",
)


def test_training_sub_packages_import_only_downwards(graph):
    rank = {name: i for i, name in enumerate(TRAINING_LAYERS)}
    mine = {m for m in graph if m.startswith("training.") and m.count(".") >= 1}
    assert {m.split(".")[1] for m in mine} <= set(rank), "a new sub-package: place it"
    up = sorted(
        f"{m} -> {i}"
        for m in mine
        for i in graph[m]
        if i.startswith("training.") and rank[i.split(".")[1]] > rank[m.split(".")[1]]
    )
    assert up == []


def test_no_import_cycle(graph):
    """Tarjan's strongly connected components over modules: each must be one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert cycles == []


def test_torch_and_tensorflow_code_stay_apart():
    """PyTorch modules (the HGNN) and TensorFlow modules (the towers) never share a file,
    and serving imports no torch at all."""
    both, serving_torch = [], []
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            roots = {i.split(".")[0] for i in _imports(path)}
            if "torch" in roots and roots & {"tensorflow", "keras"}:
                both.append(str(path.relative_to(ROOT)))
            if pkg in ("serving", "inspector") and roots & {"torch", "torch_geometric", "keras"}:
                serving_torch.append(str(path.relative_to(ROOT)))
    assert both == [] and serving_torch == []

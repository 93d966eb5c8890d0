"""Shared fixtures: tiny worlds from the project's own generator, built once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from training.synth import WorldConfig, generate_world


@pytest.fixture(scope="session")
def tiny_config() -> WorldConfig:
    return WorldConfig.for_scale("tiny")


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory, tiny_config) -> Path:
    """A tiny world (seed 0); tests must not modify it (copy it first)."""
    out = tmp_path_factory.mktemp("worlds") / "tiny0"
    generate_world(tiny_config, 0, out, progress=False)
    return out


@pytest.fixture
def world_copy(tiny_world, tmp_path) -> Path:
    """A private copy of the four contract files, free to break."""
    dst = tmp_path / "world"
    dst.mkdir()
    for name in ("users", "music", "items", "events"):
        shutil.copy(tiny_world / f"{name}.parquet", dst / f"{name}.parquet")
    return dst

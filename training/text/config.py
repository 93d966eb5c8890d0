"""Typed configuration of the text-embedding step."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from audiorec.config import StrictConfig


class TextConfig(StrictConfig):
    # None: the packaged all-MiniLM-L6-v2; else a local sentence-transformers directory
    model: str | None = None
    # "bf16": encoding under bfloat16 autocast, 2.2x faster on a CPU with AVX512-BF16
    # (bench/bench_text.py: cosine to the fp32 vectors >= 0.9999; int8 dynamic
    # quantization was 2.4x but moved vectors to cosine 0.93). A separate embedding
    # version (and cache key): the two are never mixed.
    precision: Literal["fp32", "bf16"] = "fp32"
    batch_size: int = Field(128, ge=1, le=4096)

    def describe(self) -> str:
        """The settings the text step runs with, in one line."""
        model = self.model or "packaged all-MiniLM-L6-v2"
        return f"{model}, precision {self.precision}, batch {self.batch_size}"

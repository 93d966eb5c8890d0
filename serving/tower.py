"""Runs the exported user tower: raw feature arrays in, unit user vectors out.

The SavedModel's ``serving_default`` signature is called directly (STACK.md trap 9: ~0.15
ms for one user, against ~40 ms for ``predict``). TensorFlow is held to one thread per op
pool when this process has not started TensorFlow yet, so that concurrent requests do not
contend for the 2 cores (trap 10).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from audiorec.errors import ContractError
from audiorec.tower_inputs import InputSpec

SIGNATURE = "serving_default"
OUTPUT = "user_vector"


def _limit_threads(tf: Any) -> None:
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already initialised in this process: keep its setting
        pass


class UserTower:
    """The exported user tower of one artifact version."""

    def __init__(self, path: str | Path, specs: Sequence[InputSpec], dim: int):
        import os

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up banner
        import tensorflow as tf

        _limit_threads(tf)
        self._tf = tf
        self.specs = list(specs)
        self.dim = dim
        loaded = tf.saved_model.load(str(path))
        if SIGNATURE not in loaded.signatures:
            raise ContractError(
                f"{path}: no {SIGNATURE!r} signature (has {sorted(loaded.signatures)})"
            )
        self._loaded = loaded  # the signature needs its owner kept alive
        self._fn = loaded.signatures[SIGNATURE]
        inputs = set(self._fn.structured_input_signature[1])
        expected = {s.name for s in self.specs}
        if inputs != expected:
            raise ContractError(
                f"{path}: the signature takes {sorted(inputs)}, the manifest "
                f"lists {sorted(expected)}"
            )

    @property
    def input_names(self) -> list[str]:
        return sorted(self._fn.structured_input_signature[1])

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """(n, dim) float32 user vectors of ``inputs`` (see audiorec.tower_inputs)."""
        tf = self._tf
        tensors = {
            s.name: tf.constant(
                inputs[s.name].astype(str) if s.kind == "string" else inputs[s.name]
            )
            for s in self.specs
        }
        return np.asarray(self._fn(**tensors)[OUTPUT].numpy(), dtype=np.float32)

"""Runs the exported user tower: raw feature arrays in, unit user vectors out.

Two runtimes of the one trained model, chosen per artifact:

- **ONNX Runtime** (``user_tower.onnx``, converted from the SavedModel and checked equal
  to it within 1e-5 at publish: training/release/onnx_export.py): ~0.15 ms for one user,
  one thread, no TensorFlow in the process. The default when the version has it.
- **TensorFlow** (the SavedModel's ``serving_default`` signature, called directly:
  docs/stack-notes.md, note 3): ~1 ms for one user; versions published before the ONNX export, or
  ``runtime="tensorflow"``. TensorFlow is held to one thread per op pool when this process
  has not started it yet, so concurrent requests do not contend for the cores (trap 10).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from audiorec.errors import ContractError
from audiorec.ort_session import single_thread_session
from audiorec.tower_inputs import InputSpec

SIGNATURE = "serving_default"
OUTPUT = "user_vector"
Runtime = Literal["auto", "onnx", "tensorflow"]


def _limit_threads(tf: Any) -> None:
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already initialised in this process: keep its setting
        pass


class UserTower:
    """The exported user tower of one artifact version. ``path``: the SavedModel
    directory; ``onnx``: its ONNX export (None: the version has none)."""

    def __init__(
        self,
        path: str | Path,
        specs: Sequence[InputSpec],
        dim: int,
        onnx: str | Path | None = None,
        runtime: Runtime = "auto",
    ):
        self.specs = list(specs)
        self.dim = dim
        expected = {s.name for s in self.specs}
        if runtime == "onnx" and onnx is None:
            raise ContractError(f"{path}: runtime onnx asked, but the version has no ONNX tower")
        self.runtime = "onnx" if onnx is not None and runtime != "tensorflow" else "tensorflow"
        if self.runtime == "onnx":
            inputs = self._load_onnx(Path(str(onnx)))
        else:
            inputs = self._load_tf(path)
        if inputs != expected:
            raise ContractError(
                f"{path}: the {self.runtime} tower takes {sorted(inputs)}, the manifest "
                f"lists {sorted(expected)}"
            )
        self._inputs = sorted(inputs)

    def _load_onnx(self, path: Path) -> set[str]:
        self._session = single_thread_session(path)
        outputs = [o.name for o in self._session.get_outputs()]
        if OUTPUT not in outputs:
            raise ContractError(f"{path}: no {OUTPUT!r} output (has {outputs})")
        return {i.name for i in self._session.get_inputs()}

    def _load_tf(self, path: str | Path) -> set[str]:
        import os

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up banner
        import tensorflow as tf

        _limit_threads(tf)
        self._tf = tf
        loaded = tf.saved_model.load(str(path))
        if SIGNATURE not in loaded.signatures:
            raise ContractError(
                f"{path}: no {SIGNATURE!r} signature (has {sorted(loaded.signatures)})"
            )
        self._loaded = loaded  # the signature needs its owner kept alive
        self._fn = loaded.signatures[SIGNATURE]
        return set(self._fn.structured_input_signature[1])

    @property
    def input_names(self) -> list[str]:
        return self._inputs

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """(n, dim) float32 user vectors of ``inputs`` (see audiorec.tower_inputs)."""
        if self.runtime == "onnx":
            feed = {s.name: inputs[s.name] for s in self.specs}
            return np.asarray(self._session.run([OUTPUT], feed)[0], dtype=np.float32)
        tf = self._tf
        tensors = {
            s.name: tf.constant(
                inputs[s.name].astype(str) if s.kind == "string" else inputs[s.name]
            )
            for s in self.specs
        }
        return np.asarray(self._fn(**tensors)[OUTPUT].numpy(), dtype=np.float32)

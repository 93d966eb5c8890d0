"""Exports of a trained two-tower model: the user tower as a SavedModel, item vectors.

The SavedModel's ``serving_default`` signature takes one tensor per feature of the
user-tower feature service, named after it (string (n,), number (n,) float32, vector
(n, dim) float32; missing values as :mod:`audiorec.tower_inputs` writes them) and returns
``{"user_vector": (n, dim) float32}`` unit vectors. Calling the signature directly costs
~0.15 ms for one user (``model.predict`` ~40 ms; docs/stack-notes.md, note 3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import keras
import tensorflow as tf

from audiorec.tower_inputs import InputSpec

SIGNATURE = "serving_default"
OUTPUT = "user_vector"


def _tensor_spec(s: InputSpec) -> tf.TensorSpec:
    if s.kind == "string":
        return tf.TensorSpec([None], tf.string, name=s.name)
    if s.kind == "number":
        return tf.TensorSpec([None], tf.float32, name=s.name)
    return tf.TensorSpec([None, s.dim], tf.float32, name=s.name)


class _UserTowerModule(tf.Module):
    def __init__(self, tower: keras.Model):
        super().__init__()
        self.tower = tower


def export_user_tower(
    tower: keras.Model, specs: Sequence[InputSpec], path: str | Path, prior_coordinate: bool = False
) -> None:
    """Write the SavedModel directory ``path`` (must not exist). ``prior_coordinate``:
    the output gets a last column of 1.0, which multiplies the items' popularity prior
    (training/twotower/prior.py), so the index's inner product is the full score."""
    export_tower(tower, specs, path, OUTPUT, ones_column=prior_coordinate)


def export_tower(
    tower: keras.Model,
    specs: Sequence[InputSpec],
    path: str | Path,
    output: str,
    ones_column: bool = False,
) -> None:
    """Either tower as a SavedModel at ``path`` whose ``serving_default`` signature takes
    ``specs`` and returns ``{output: (n, dim)}`` (``ones_column``: a last column of 1.0)."""
    module = _UserTowerModule(tower)
    signature = {s.name: _tensor_spec(s) for s in specs}

    @tf.function(input_signature=[signature])
    def serve(features):
        u = module.tower(features, training=False)
        if ones_column:
            u = tf.concat([u, tf.ones_like(u[:, :1])], axis=1)
        return {output: u}

    tf.saved_model.save(module, str(path), signatures={SIGNATURE: serve.get_concrete_function()})

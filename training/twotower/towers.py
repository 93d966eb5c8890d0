"""The towers: raw Feast features in, an L2-normalised vector out.

Each tower owns its preprocessing (:class:`FeatureEncoder`), so the exported user tower
takes the feature service's raw values (as :mod:`audiorec.tower_inputs` shapes them) and
serving re-implements nothing:

* string (batch,): vocabulary lookup learned from training data -> embedding; ``""``
  (missing) and unseen values share the out-of-vocabulary row;
* number (batch,): ``log1p`` (all are non-negative counts, ages, days), standardised with
  the training mean / std; NaN (missing) -> 0, i.e. the training mean;
* vector (batch, dim): NaN (missing) -> 0, the "nothing in the window" value the feature
  jobs already use.

Features listed in ``ignore`` are still accepted (the signature stays the service's
feature list) but do not reach the network: the "2T alone" and "no weak signals" switches.
Then dense layers (ReLU between, linear last) and L2 normalisation: (batch, layers[-1]).
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import numpy as np
from keras import ops

from audiorec.tower_inputs import InputSpec


def fit_encoder_stats(
    specs: Sequence[InputSpec], inputs: dict[str, np.ndarray], max_vocabulary: int = 1000
) -> dict:
    """Vocabularies (most frequent first) and log1p mean / std, from training inputs."""
    stats: dict[str, dict[str, Any]] = {}
    for s in specs:
        x = inputs[s.name]
        if s.kind == "string":
            values, counts = np.unique(x[x != ""].astype(str), return_counts=True)
            order = np.argsort(-counts, kind="stable")[:max_vocabulary]
            stats[s.name] = {"vocabulary": [str(v) for v in values[order]]}
        elif s.kind == "number":
            logged = (
                np.log1p(np.maximum(x[~np.isnan(x)], 0)) if (~np.isnan(x)).any() else np.zeros(1)
            )
            stats[s.name] = {"mean": float(logged.mean()), "std": float(logged.std() or 1.0)}
    return stats


class FeatureEncoder(keras.layers.Layer):
    """{feature: raw tensor} -> (batch, width) float32; see the module docstring."""

    def __init__(
        self,
        specs: Sequence[InputSpec],
        stats: dict,
        embedding_dim: int = 8,
        ignore: Sequence[str] = (),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.specs = [s for s in specs if s.name not in set(ignore)]
        self.stats = stats
        self.lookups, self.embeddings = {}, {}
        for s in self.specs:
            if s.kind == "string":
                vocab = stats[s.name]["vocabulary"] or ["<none>"]
                self.lookups[s.name] = keras.layers.StringLookup(
                    vocabulary=vocab, num_oov_indices=1, name=f"{s.name}_lookup"
                )
                self.embeddings[s.name] = keras.layers.Embedding(
                    len(vocab) + 1,
                    stats[s.name].get("dim", embedding_dim),
                    name=f"{s.name}_embedding",
                )

    def call(self, features: dict) -> "keras.KerasTensor":
        parts = []
        for s in self.specs:
            x = features[s.name]
            if s.kind == "string":
                parts.append(self.embeddings[s.name](self.lookups[s.name](x)))
            elif s.kind == "number":
                mean, std = self.stats[s.name]["mean"], self.stats[s.name]["std"]
                z = (ops.log1p(ops.maximum(x, 0.0)) - mean) / std
                parts.append(ops.expand_dims(ops.where(ops.isnan(x), 0.0, z), -1))
            else:
                parts.append(ops.where(ops.isnan(x), 0.0, x))
        return ops.concatenate(parts, axis=-1)


def tower_inputs_layer(specs: Sequence[InputSpec]) -> dict:
    return {
        s.name: keras.Input(
            shape=(s.dim,) if s.kind == "vector" else (),
            dtype="string" if s.kind == "string" else "float32",
            name=s.name,
        )
        for s in specs
    }


def build_tower(
    specs: Sequence[InputSpec],
    stats: dict,
    layers: Sequence[int],
    embedding_dim: int,
    ignore: Sequence[str],
    name: str,
) -> keras.Model:
    """A functional model whose inputs are named after the features."""
    inputs = tower_inputs_layer(specs)
    x = FeatureEncoder(specs, stats, embedding_dim, ignore, name=f"{name}_encoder")(inputs)
    for i, width in enumerate(layers):
        last = i == len(layers) - 1
        x = keras.layers.Dense(width, activation=None if last else "relu", name=f"{name}_dense{i}")(
            x
        )
    out = keras.layers.UnitNormalization(name=f"{name}_l2")(x)
    return keras.Model(inputs, out, name=name)

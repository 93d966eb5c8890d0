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

ONE_HOT_MAX = 1_000  # vocabularies up to this size are looked up by a one-hot product


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
        # The numbers are scaled as one (batch, n) block and the vectors cleaned as one,
        # not a chain of ops per feature: the exported graph runs once per request, and
        # ~80 ops on one-element tensors cost more than the dense layers (ONNX Runtime
        # pays a dispatch per op). The columns then go back to the specs' order, so the
        # output, and the dense layers' weights, are those of the per-feature form.
        strings = [s for s in self.specs if s.kind == "string"]
        numbers = [s for s in self.specs if s.kind == "number"]
        vectors = [s for s in self.specs if s.kind == "vector"]
        blocks = [self._embed(s.name, self.lookups[s.name](features[s.name])) for s in strings]
        if numbers:
            x = ops.stack([features[s.name] for s in numbers], axis=-1)
            mean = np.array([self.stats[s.name]["mean"] for s in numbers], np.float32)
            std = np.array([self.stats[s.name]["std"] for s in numbers], np.float32)
            z = (ops.log1p(ops.maximum(x, 0.0)) - mean) / std
            blocks.append(ops.where(ops.isnan(x), 0.0, z))
        if vectors:
            v = ops.concatenate([features[s.name] for s in vectors], axis=-1)
            blocks.append(ops.where(ops.isnan(v), 0.0, v))
        joined = blocks[0] if len(blocks) == 1 else ops.concatenate(blocks, axis=-1)
        order = self._column_order(strings + numbers + vectors)
        if np.array_equal(order, np.arange(len(order))):
            return joined
        return ops.take(joined, order, axis=-1)

    def _embed(self, name: str, ids: Any) -> Any:
        """(batch, dim) rows of ``name``'s embedding. A small vocabulary's rows come from a
        one-hot product (one op in the exported graph); Keras's own lookup adds a chain of
        ops for negative indices, which a vocabulary lookup never yields. The same rows,
        from the same weights, either way."""
        layer = self.embeddings[name]
        if layer.input_dim > ONE_HOT_MAX:
            return layer(ids)
        layer.build()  # where calling it would: the weights' creation order is unchanged
        return ops.matmul(ops.one_hot(ids, layer.input_dim), layer.embeddings)

    def _column_order(self, grouped: Sequence[InputSpec]) -> np.ndarray:
        """Positions, in the grouped layout (strings, numbers, vectors), of the specs'
        order's columns: joined[:, order] is the per-feature concatenation."""
        width = {s.name: self._width(s) for s in self.specs}
        start, at = {}, 0
        for s in grouped:
            start[s.name], at = at, at + width[s.name]
        return np.concatenate(
            [np.arange(start[s.name], start[s.name] + width[s.name]) for s in self.specs]
        ).astype(np.int32)

    def _width(self, s: InputSpec) -> int:
        if s.kind == "string":
            return int(self.embeddings[s.name].output_dim)
        return 1 if s.kind == "number" else s.dim


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

"""A new title's content vectors without torch: the sentence encoder on ONNX Runtime and
the HGNN's self path in numpy (exported and checked by training/release/live.py).

- :class:`TextEncoder`: the checkpoint's own tokenizer (``tokenizers``, truncated at the
  model's ``max_seq_length`` as sentence-transformers does), the transformer's last hidden
  state, mean pooling over the attention mask, L2 normalisation: sentence-transformers'
  all-MiniLM-L6-v2 pipeline. One text is one call (~3-50 ms by length on one thread).
- :func:`hgnn_self`: a node with no edges gets only the self terms of each HGNN layer,
  ``normalize(W2 relu(W1 x + b1) + b2)`` with its type's weights.

Shapes: ``TextEncoder(text)`` -> (dim,) float32; ``hgnn_self(arrays, type, x (n, d_in))``
-> (n, d_out) float32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from audiorec.errors import ContractError
from audiorec.ort_session import single_thread_session


class TextEncoder:
    def __init__(self, model: str | Path, tokenizer: str | Path, max_seq_length: int):
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(tokenizer))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=max_seq_length)
        self._session = single_thread_session(model)
        names = {i.name for i in self._session.get_inputs()}
        if names != {"input_ids", "attention_mask", "token_type_ids"}:
            raise ContractError(f"{model}: not a BERT-style encoder (inputs {sorted(names)})")

    def __call__(self, text: str) -> np.ndarray:
        enc = self._tokenizer.encode(text)
        mask = np.asarray([enc.attention_mask], np.int64)
        hidden = self._session.run(
            ["last_hidden_state"],
            {
                "input_ids": np.asarray([enc.ids], np.int64),
                "attention_mask": mask,
                "token_type_ids": np.asarray([enc.type_ids], np.int64),
            },
        )[0]
        pooled = (hidden * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1), 1)[:, None]
        vec = np.asarray(pooled[0], np.float32)
        return np.asarray(vec / max(float(np.linalg.norm(vec)), 1e-12), np.float32)


def hgnn_self(arrays: Mapping[str, np.ndarray], item_type: str, x: np.ndarray) -> np.ndarray:
    """The HGNN embedding of nodes of ``item_type`` with no edges (``arrays``: the
    ``<type>/w<i>`` (d_in, d_out) and ``<type>/b<i>`` weights of each layer)."""
    layers = sum(1 for k in arrays if k.startswith(f"{item_type}/w"))
    if not layers:
        raise ContractError(f"the HGNN export has no weights for item type {item_type!r}")
    h = np.asarray(x, np.float32)
    for i in range(layers):
        h = h @ arrays[f"{item_type}/w{i}"] + arrays[f"{item_type}/b{i}"]
        if i < layers - 1:
            h = np.maximum(h, 0.0)
    return np.asarray(h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12), np.float32)

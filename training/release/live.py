"""What a version needs to embed a title published after it (RecordItems), with no torch
or TensorFlow in the server: the three models of an item's vector, exported beside the
version and each checked against the model it came from before the version is published.

An item's served vector is ``item_tower(type, language, genre, text, hgnn) ++ [beta x
prior]``; for a new title:

- ``text``: all-MiniLM-L6-v2 (mean pooling, L2-normalised) of ``item_text(title,
  description)`` -> ``live/text.onnx`` (the transformer, exported from torch) and
  ``live/tokenizer.json`` (the checkpoint's own tokenizer). Checked against
  sentence-transformers on catalogue texts and edge cases (empty, long, non-Latin).
- ``hgnn``: a node with no edges gets only the HGNN's self terms (training/hgnn/model.py:
  ``normalize(W2[t] relu(W1[t] x + b1) + b2)``) -> ``live/hgnn_self.npz``. Checked against
  the torch HGNN run on edgeless blocks.
- ``item_tower``: the Keras item tower -> ``live/item_tower.onnx`` (via a SavedModel, as
  the user tower). Checked against the SavedModel on catalogue items.
- the prior: a title nobody streamed has prior 0, so its last coordinate is 0.

The manifest's ``model.live`` records each file, its largest difference and the limit.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from audiorec.errors import ContractError
from audiorec.itemtext import item_text

LIVE_DIR = "live"
TEXT_ATOL = 1e-5  # ONNX MiniLM against sentence-transformers (measured ~2e-7)
HGNN_ATOL = 1e-5
TOWER_ATOL = 1e-5
EDGE_TEXTS = ("", "x " * 400, "Ünïcödé — 書名 Ñ", "A. B")  # empty, truncated, non-Latin


def export_live(
    out: Path,
    *,
    towers: Any,  # training.twotower.train.TrainedTowers
    data: Any,  # training.twotower.examples.TowerData
    hgnn_dir: Path,
    text_model: str | None,
    items_parquet: Path,
    max_items: int,
    previous: Path | None = None,
) -> dict:
    """Write ``out/live/`` and return the manifest's ``model.live`` entry. ``previous``:
    the version served now, whose text encoder is hard-linked when it came from the same
    checkpoint (its 90 MB once, not once per version; checked like a new export)."""
    folder = out / LIVE_DIR
    folder.mkdir()
    texts = _sample_texts(items_parquet) + list(EDGE_TEXTS)
    text = export_text(folder, text_model, texts, _reusable_text(previous, text_model))
    hgnn = export_hgnn_self(folder, hgnn_dir, data.types.names)
    tower = export_item_tower(folder, towers, data)
    return {
        "path": LIVE_DIR,
        "text": text,
        "hgnn": hgnn,
        "item_tower": tower,
        "max_items": max_items,
    }


def _sample_texts(items_parquet: Path, n: int = 32) -> list[str]:
    import pyarrow.parquet as pq

    items = pq.read_table(items_parquet, columns=["title", "description"])
    rows = np.linspace(0, items.num_rows - 1, min(n, items.num_rows)).astype(int)
    titles, descriptions = (
        items.column("title").to_pylist(),
        items.column("description").to_pylist(),
    )
    return [item_text(titles[i], descriptions[i]) for i in rows]


def _reusable_text(previous: Path | None, model_name: str | None) -> Path | None:
    """``previous``'s live folder when its text encoder came from ``model_name``."""
    import json

    from training.text.model import DEFAULT_TEXT_MODEL

    if previous is None or not (previous / "manifest.json").is_file():
        return None
    try:
        live = json.loads((previous / "manifest.json").read_text())["model"].get("live") or {}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    text = live.get("text") or {}
    folder = previous / live.get("path", LIVE_DIR)
    same = text.get("checkpoint") == (model_name or DEFAULT_TEXT_MODEL)
    return folder if same and (folder / "text.onnx").is_file() else None


def export_text(
    folder: Path, model_name: str | None, texts: list[str], reuse: Path | None = None
) -> dict:
    """The sentence encoder for ONNX Runtime (hard-linked from ``reuse`` when given);
    its largest difference from sentence-transformers on ``texts`` above TEXT_ATOL
    refuses the version."""
    from audiorec.textencoder import TextEncoder
    from training.text.model import DEFAULT_TEXT_MODEL, load_text_model, resolve_text_model

    st = load_text_model(model_name)
    max_len = int(st.max_seq_length)
    files = ("text.onnx", "tokenizer.json")
    if reuse is not None:
        try:
            for name in files:
                os.link(reuse / name, folder / name)
        except OSError:  # another file system, or gone meanwhile: export anew
            for name in files:
                (folder / name).unlink(missing_ok=True)
            reuse = None
    if reuse is None:
        _export_bert(st[0].auto_model.eval(), folder / "text.onnx")
        shutil.copy(resolve_text_model(model_name) / "tokenizer.json", folder / "tokenizer.json")
    want = st.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    encoder = TextEncoder(folder / "text.onnx", folder / "tokenizer.json", max_len)
    got = np.stack([encoder(t) for t in texts])
    diff = float(np.abs(want - got).max())
    if not diff <= TEXT_ATOL:
        raise ContractError(
            f"the ONNX text encoder differs from sentence-transformers by {diff:.2e} "
            f"(limit {TEXT_ATOL:g})"
        )
    return {
        "model": "text.onnx",
        "tokenizer": "tokenizer.json",
        "checkpoint": model_name or DEFAULT_TEXT_MODEL,
        "max_seq_length": max_len,
        "checked_texts": len(texts),
        "max_abs_diff": diff,
        "atol": TEXT_ATOL,
        "linked_from": reuse.parent.name if reuse is not None else "",
    }


def _export_bert(bert: Any, out: Path) -> None:
    """The transformer's last hidden state for ONNX Runtime (TorchScript exporter)."""
    import torch

    class Wrapped(torch.nn.Module):  # named inputs: transformers' positional order varies
        def __init__(self, model: Any):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    names = ["input_ids", "attention_mask", "token_type_ids"]
    example = tuple(torch.ones(1, 8, dtype=torch.int64) for _ in names)
    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter's deprecation and tracer notes: the check after it is
        # what says whether the export is right
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Wrapped(bert),
            example,
            str(out),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={k: {0: "batch", 1: "tokens"} for k in [*names, "last_hidden_state"]},
            opset_version=17,
            dynamo=False,  # the TorchScript exporter: no onnxscript needed
        )


def export_hgnn_self(folder: Path, hgnn_dir: Path, types: tuple[str, ...]) -> dict:
    """Each item type's self path through the HGNN as arrays; checked against the torch
    model on edgeless blocks of random unit inputs."""
    import torch

    from training.hgnn.run import load_hgnn
    from training.hgnn.sampler import Block

    model, manifest = load_hgnn(hgnn_dir)
    arrays: dict[str, np.ndarray] = {}
    for name in types:
        t = manifest.item_types.index(name)
        for i, layer in enumerate(model.layers):
            linear: Any = layer.selfs[t]  # type: ignore[index]
            arrays[f"{name}/w{i}"] = linear.weight.detach().numpy().T.astype(np.float32)
            arrays[f"{name}/b{i}"] = linear.bias.detach().numpy().astype(np.float32)
    np.savez(folder / "hgnn_self.npz", **arrays)  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, manifest.in_dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    diff = 0.0
    from audiorec.textencoder import hgnn_self

    for name in types:
        t = manifest.item_types.index(name)
        nodes = torch.arange(len(x))
        blocks = [Block(nodes, len(x), {}) for _ in model.layers]
        with torch.no_grad():
            want = model(torch.from_numpy(x), blocks, torch.full((len(x),), t)).numpy()
        got = hgnn_self(arrays, name, x)
        diff = max(diff, float(np.abs(want - got).max()))
    if not diff <= HGNN_ATOL:
        raise ContractError(
            f"the exported HGNN self path differs from the torch model by {diff:.2e} "
            f"(limit {HGNN_ATOL:g})"
        )
    return {
        "weights": "hgnn_self.npz",
        "hgnn_version": manifest.version,
        "layers": len(model.layers),
        "max_abs_diff": diff,
        "atol": HGNN_ATOL,
    }


def export_item_tower(folder: Path, towers: Any, data: Any) -> dict:
    """The item tower for ONNX Runtime, checked against its SavedModel on catalogue items
    (each item's own features, missing values included)."""
    from training.release.onnx_export import check_onnx, export_onnx
    from training.twotower.export import export_tower
    from training.twotower.train import ITEM_ID, item_inputs

    specs = list(data.item_specs) + ([ITEM_ID] if towers.item_ids else [])
    saved = folder / "item_tower"
    export_tower(towers.item_tower, specs, saved, "item_vector")
    export_onnx(saved, folder / "item_tower.onnx")
    inputs = item_inputs(data, towers.item_ids)
    rows = np.linspace(0, len(data.item_ids) - 1, min(256, len(data.item_ids))).astype(int)
    diff = check_onnx(
        saved,
        folder / "item_tower.onnx",
        {k: v[rows] for k, v in inputs.items()},
        atol=TOWER_ATOL,
        output="item_vector",
    )
    shutil.rmtree(saved)  # serving runs the ONNX file; the SavedModel was only its source
    return {
        "model": "item_tower.onnx",
        "inputs": [s.model_dump() for s in specs],
        "max_abs_diff": diff,
        "atol": TOWER_ATOL,
    }

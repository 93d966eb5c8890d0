"""The user tower for ONNX Runtime: converted from the exported SavedModel, never
rewritten by hand, and checked against it before a version is published.

Serving runs the user tower once per request. Through TensorFlow's signature that is
~1 ms for one user (op dispatch in Python and the TF runtime); the same graph in ONNX
Runtime is ~0.15 ms (docs/benchmarks.md). tf2onnx converts the ``serving_default``
signature, string lookups included (``CategoryMapper``); the one op it lacks, ``Log1p``
(the count features' log scaling), becomes ``Log(1 + x)``. :func:`check_onnx` runs both
on the same inputs: a difference above ``atol`` refuses the version.

Shapes: the ONNX model takes the signature's inputs by name (string (n,), number (n,),
vector (n, dim)) and returns ``user_vector`` (n, dim), like the SavedModel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from audiorec.errors import ContractError

OPSET = 17
SIGNATURE = "serving_default"


def _log1p(ctx: Any, node: Any, name: str, args: Any) -> None:
    """tf2onnx handler: ``Log1p(x)`` as ``Log(x + 1)``."""
    from tf2onnx import utils

    x = node.input[0]
    one = ctx.make_const(
        utils.make_name(f"{node.name}_one"),
        np.array(1, dtype=utils.map_onnx_to_numpy_type(ctx.get_dtype(x))),
    )
    shifted = ctx.make_node("Add", [x, one.output[0]], op_name_scope=node.name)
    ctx.replace_inputs(node, [shifted.output[0]])
    node.type = "Log"


def export_onnx(saved_model: str | Path, out: str | Path) -> None:
    """Convert the SavedModel's ``serving_default`` signature to the ONNX file ``out``."""
    import logging

    import tensorflow as tf

    # tf2onnx warns for every op whose shape it cannot infer (the string lookups): noise,
    # since check_onnx runs both models on real rows and refuses any difference
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    from tf2onnx import tf_loader
    from tf2onnx.convert import _convert_common

    # the same steps as `python -m tf2onnx.convert --saved-model`, whose command line has
    # no way to pass an op handler
    graph, inputs, outputs, tables, renames = tf_loader.from_saved_model(
        str(saved_model),
        None,
        None,
        None,
        [SIGNATURE],
        None,
        False,
        return_initialized_tables=True,
        return_tensors_to_rename=True,
    )
    with tf.device("/cpu:0"):
        model, _ = _convert_common(
            graph,
            name=str(saved_model),
            opset=OPSET,
            custom_op_handlers={"Log1p": (_log1p, [])},
            input_names=inputs,
            output_names=outputs,
            tensors_to_rename=renames,
            initialized_tables=tables,
        )
    Path(out).write_bytes(model.SerializeToString())


def check_onnx(
    saved_model: str | Path,
    onnx_path: str | Path,
    inputs: dict[str, np.ndarray],
    atol: float = 1e-5,
    output: str = "user_vector",
) -> float:
    """The largest difference between the two runtimes' user vectors on ``inputs``
    (:func:`audiorec.tower_inputs.tower_inputs` arrays); above ``atol``: ContractError."""
    import onnxruntime as ort
    import tensorflow as tf

    fn = tf.saved_model.load(str(saved_model)).signatures[SIGNATURE]
    want = fn(
        **{k: tf.constant(v.astype(str) if v.dtype == object else v) for k, v in inputs.items()}
    )[output].numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run([output], {i.name: inputs[i.name] for i in session.get_inputs()})[0]
    diff = float(np.abs(want - got).max()) if want.size else 0.0
    if not diff <= atol:
        raise ContractError(
            f"{onnx_path}: the ONNX tower differs from the SavedModel by {diff:.2e} "
            f"(limit {atol:g})"
        )
    return diff


def probe_inputs(specs: Any, stats: dict, n: int = 512, seed: int = 0) -> dict[str, np.ndarray]:
    """Tower inputs (:func:`audiorec.tower_inputs.tower_inputs` arrays) that reach every
    branch of an encoder with ``stats``: each vocabulary entry, an unseen and an empty
    string, counts over orders of magnitude, negative and missing (NaN) ones, and missing
    vector rows. For checking two exports of one tower against each other."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for s in specs:
        if s.kind == "string":
            words = [*stats.get(s.name, {}).get("vocabulary", []), "", "<unseen>"]
            out[s.name] = np.array([words[i % len(words)] for i in range(n)], dtype=object)
        elif s.kind == "number":
            x = rng.lognormal(1.0, 2.0, n).astype(np.float32)
            x[rng.random(n) < 0.1] = -3.0
            x[rng.random(n) < 0.2] = np.nan
            out[s.name] = x
        else:
            v = rng.normal(size=(n, s.dim)).astype(np.float32)
            v[rng.random(n) < 0.3] = np.nan
            out[s.name] = v
    return out

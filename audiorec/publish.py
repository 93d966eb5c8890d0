"""Atomic publication of a directory: build it aside, then swap it into place.

Every step that writes a directory artifact (a world, the feature tables, an HGNN run, an
index) stages it in a hidden sibling and renames it into place only when complete, so a
failed step never leaves a half-written artifact and the previous one stays intact.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def staged_directory(out: str | Path) -> Iterator[Path]:
    """Yield an empty staging directory next to ``out``. On normal exit it replaces
    ``out`` (an older ``out`` is moved aside first, then removed); on an exception it is
    removed and ``out`` is untouched."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

"""Atomic publication: directories built aside and swapped in, state files replaced whole.

Every step that writes a directory artifact (a world, the feature tables, an HGNN run, an
index) stages it in a hidden sibling and swaps it into place only when complete, so a
failed step never leaves a half-written artifact and the previous one stays intact.

Two ways to swap:

- ``link=False`` (write-once outputs: a world, an index inside a version): a rename; an
  older ``out`` is moved aside first, so for an instant ``out`` does not exist.
- ``link=True`` (directories a work directory replaces while others read them: the feature
  tables, the HGNN run): ``out`` is a symbolic link to a hidden generation directory and
  the swap is one ``os.replace`` of the link: at every instant ``out`` is the old or the
  new generation, whatever kills the process.

Staging directories of processes that are no longer alive are removed on the next swap
(:func:`remove_dead_staging`). Pointer, state and marker files are written with
:func:`write_atomic` / :func:`write_json` (temporary file, fsync, rename) and read with
:func:`read_json`, which
turns a corrupt or empty file into a warning and ``None`` (the caller redoes the work).
Parquet tables are written with :class:`AtomicParquet` / :func:`write_parquet`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger("audiorec")
_STAGING = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old|gen)-(?:\d+-)?(?P<pid>\d+)$")


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_staging(parent: Path, name: str | None = None) -> list[str]:
    """Remove hidden staging entries (``.<name>.tmp-PID``, ``.old-PID``, ``.gen-T-PID``)
    under ``parent`` whose process is gone, never the target of a live link."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    live = {p.resolve() for p in parent.iterdir() if p.is_symlink()}
    removed = []
    for p in parent.iterdir():
        m = _STAGING.match(p.name)
        if not m or (name is not None and m["name"] != name) or p.resolve() in live:
            continue
        if pid_alive(int(m["pid"])):
            continue  # its process may still be writing it
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p.name)
    return removed


@contextmanager
def staged_directory(out: str | Path, link: bool = False) -> Iterator[Path]:
    """Yield an empty staging directory next to ``out``. On normal exit it becomes ``out``
    (see the module docstring for ``link``); on an exception it is removed and ``out`` is
    untouched."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_staging(out.parent, out.name)
    kind = f"gen-{time.time_ns()}" if link else "tmp"
    tmp = out.parent / f".{out.name}.{kind}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if link:
        _swap_link(out, tmp)
        return
    old = None
    if out.exists() or out.is_symlink():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        _remove(old)


def _swap_link(out: Path, generation: Path) -> None:
    previous = out.resolve() if out.is_symlink() else None
    if out.exists() and not out.is_symlink():
        # A directory from before links were used: move it aside once (a crash right
        # here leaves `out` missing, which every reader treats as "not built yet").
        legacy = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(legacy)
        previous = legacy
    link_tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    link_tmp.unlink(missing_ok=True)
    os.symlink(generation.name, link_tmp)
    os.replace(link_tmp, out)
    if previous is not None and previous != generation.resolve():
        _remove(previous)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def remove_tree(path: str | Path) -> None:
    """Remove ``path``: a directory, or a link and the generation it points at."""
    path = Path(path)
    if path.is_symlink():
        target = path.resolve()
        path.unlink()
        shutil.rmtree(target, ignore_errors=True)
    elif path.exists():
        shutil.rmtree(path)


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as JSON, atomically (:func:`write_atomic`)."""
    write_atomic(path, json.dumps(data, indent=2))


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` so that ``path`` holds the old or the new content, whole, whatever
    happens (temporary file, fsync, rename, fsync of the directory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # some file systems cannot fsync a directory; the rename still holds
        pass


def read_json(path: str | Path, what: str) -> Any | None:
    """The JSON in ``path``; None when the file is absent, and None with one warning
    naming ``what`` when it is empty or corrupt (a crash or a full disk): the caller then
    acts as if it were absent, which always means redoing work, never skipping it."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        message = (
            f"{what} {path} is corrupt ({'empty' if not text.strip() else exc}); "
            "ignoring it and redoing the work it recorded"
        )
        log.warning(message)  # unconfigured (the CLI), Python prints it as one stderr line
        return None


class AtomicParquet:
    """A parquet file written in parts, visible under its final name only once closed.

    Use as a context manager; on an exception the partial file is removed.
    """

    def __init__(self, path: Path, schema: pa.Schema):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = pq.ParquetWriter(self.tmp, schema, compression="zstd")
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        self.writer.write_table(table)
        self.rows += table.num_rows

    def __enter__(self) -> "AtomicParquet":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.writer.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def write_parquet(path: str | Path, table: pa.Table) -> None:
    """Write ``table`` to ``path`` in one go, atomically (:class:`AtomicParquet`)."""
    with AtomicParquet(Path(path), table.schema) as out:
        out.write(table)

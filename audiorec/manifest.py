"""One manifest format for every artifact directory: what it is, and that it is whole.

Each artifact (a published version, an HNSW index, an HGNN run) is a directory with a
``manifest.json``: a :class:`ManifestBase` subclass that names its ``kind`` and
``format_version`` (class constants, checked on load), its own fields, and the sha256 of
every other file in the directory (``files``, filled in by :func:`write_manifest`).
:func:`read_manifest` is the one loader: it refuses a missing, corrupt, foreign or newer
manifest, an unknown field, and (by default) a listed file that is missing or changed,
always with one :class:`~audiorec.errors.ContractError` naming the directory. With
``niced``, the checksums are computed in a helper process at the lowest CPU priority
(:func:`niced_digests`): a server loading a new version beside the calls it answers
leaves the cores to them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from audiorec.errors import ContractError

M = TypeVar("M", bound="ManifestBase")
FILE = "manifest.json"


class ManifestBase(BaseModel):
    """Subclasses set ``KIND``, ``WHAT`` (how a message names one, after "an") and
    ``FORMAT_VERSION`` (raised when their layout changes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    KIND: ClassVar[str] = ""
    WHAT: ClassVar[str] = "artifact"
    FORMAT_VERSION: ClassVar[int] = 1
    kind: str = ""
    format_version: int = 0
    files: dict[str, str] = {}  # relative path -> sha256, every file but the manifest

    def model_post_init(self, _context: object) -> None:
        # Stamp kind and format on creation, so a writer never spells them out.
        if not self.kind:
            object.__setattr__(self, "kind", self.KIND)
        if not self.format_version:
            object.__setattr__(self, "format_version", self.FORMAT_VERSION)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# the helper: sha256 of each named file under a directory, as JSON on stdout
_DIGESTS = """
import hashlib, json, sys
out = {}
for rel in sys.argv[2:]:
    h = hashlib.sha256()
    with open(sys.argv[1] + "/" + rel, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    out[rel] = h.hexdigest()
print(json.dumps(out))
"""
NICED_TIMEOUT_S = 600.0


def niced_digests(directory: Path, rels: list[str]) -> dict[str, str]:
    """sha256 of each of ``rels`` under ``directory``, computed in a helper process at the
    lowest CPU priority (nice 19), so that it takes only what other work leaves idle; if
    the helper cannot run or answer, in this process."""
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _DIGESTS, str(directory), *rels],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
    except OSError:
        return {rel: sha256(directory / rel) for rel in rels}
    try:
        os.setpriority(os.PRIO_PROCESS, proc.pid, 19)
    except OSError:
        pass  # already gone, or not permitted: it still hashes, at normal priority
    try:
        out, _ = proc.communicate(timeout=NICED_TIMEOUT_S)
        digests = json.loads(out) if proc.returncode == 0 else {}
    except (subprocess.TimeoutExpired, ValueError):
        proc.kill()
        proc.wait()
        digests = {}
    if not isinstance(digests, dict) or sorted(digests) != sorted(rels):
        return {rel: sha256(directory / rel) for rel in rels}
    return digests


def checksums(directory: Path) -> dict[str, str]:
    return {
        p.relative_to(directory).as_posix(): sha256(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != FILE
    }


def write_manifest(directory: str | Path, manifest: M) -> M:
    """Write ``manifest`` into ``directory`` with the checksums of the files now there;
    call it last, once every other file is written. Returns the manifest as written."""
    directory = Path(directory)
    manifest = manifest.model_copy(update={"files": checksums(directory)})
    (directory / FILE).write_text(manifest.model_dump_json(indent=2))
    return manifest


def read_manifest(
    directory: str | Path, cls: type[M], verify_files: bool = True, niced: bool = False
) -> M:
    """The manifest of ``directory`` as ``cls``, after checking its kind and format and
    (with ``verify_files``) that every listed file is present with its checksum
    (``niced``: computed at the lowest CPU priority, :func:`niced_digests`)."""
    directory = Path(directory)
    path = directory / FILE
    if not path.is_file():
        raise ContractError(f"{directory} is not an {cls.WHAT} (no {FILE})")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ContractError(f"{path} is corrupt ({exc}); rebuild the {cls.WHAT}") from None
    if (
        not isinstance(raw, dict)
        or raw.get("kind") != cls.KIND
        or raw.get("format_version") != cls.FORMAT_VERSION
    ):
        got = raw if isinstance(raw, dict) else {}
        raise ContractError(
            f"{path}: kind {got.get('kind')!r} format "
            f"{got.get('format_version')!r}, expected {cls.KIND!r} format "
            f"{cls.FORMAT_VERSION}"
        )
    try:
        manifest = cls.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ContractError(f"{path}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    if verify_files:
        for rel in manifest.files:
            if not (directory / rel).is_file():
                raise ContractError(f"{directory}: {rel} listed in the manifest is missing")
        rels = list(manifest.files)
        digests = (
            niced_digests(directory, rels)
            if niced
            else {rel: sha256(directory / rel) for rel in rels}
        )
        for rel, digest in manifest.files.items():
            if digests[rel] != digest:
                raise ContractError(
                    f"{directory}: {rel} does not match its checksum "
                    "(modified or truncated after publishing)"
                )
    return manifest

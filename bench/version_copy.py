"""Bench helper: re-issue a published version under a new name, in today's layout.

    PYTHONPATH=.:bench .venv/bin/python bench/version_copy.py --workdir W --version V
        [--name NEW]

Copies ``V`` (its files unchanged) and adds what a publish writes today but ``V`` lacks:
the per-user lookup (``lookup/``, audiorec/lookup.py). The manifest is re-signed under the
new name; ``current`` does not move. What it is for: benchmarking a hot swap or a start-up
at a scale whose pipeline takes hours (the 1M world) without running it again: a daily
publish at that scale is a version of the same size and layout.
"""

from __future__ import annotations

import argparse
import shutil
import time

from audiorec import manifest as base
from audiorec.artifact import artifacts_root, new_version_name, read_manifest
from audiorec.lookup import DIRECTORY, lookup_of_version, write_lookup
from audiorec.publish import staged_directory


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--name", help="the copy's name (default: a new version name)")
    args = ap.parse_args()
    source = artifacts_root(args.workdir) / args.version
    manifest = read_manifest(source)
    name = args.name or new_version_name(args.workdir)
    started = time.perf_counter()
    with staged_directory(artifacts_root(args.workdir) / name) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        data = dict(manifest.data)
        if not (tmp / DIRECTORY).is_dir():
            lookup = lookup_of_version(tmp)
            write_lookup(tmp, lookup)
            data["lookup_users"] = len(lookup.users)
        base.write_manifest(tmp, manifest.model_copy(update={"version": name, "data": data}))
    read_manifest(artifacts_root(args.workdir) / name)
    print(f"{args.version} -> {name} ({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()

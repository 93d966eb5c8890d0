"""What the inspector reads from a work directory: a version's manifest and catalogue, a
listener's history before the cut, the evaluation report and the charts.

Nothing here loads a model or an index: a catalogue is item metadata as Python dicts
(about 1 s and 100 MB at 250k items), cached for the two most recent versions asked for.
A listener's history is a DuckDB scan of the dataset's events filtered by user: O(events)
per page, bounded by ``history_timeout_s`` (a 1M-user world's 528 MB of events take
about 1-2 s on 2 cores); on timeout the page says so and shows the rest.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from audiorec.artifact import Manifest, artifacts_root, list_versions, read_manifest
from audiorec.errors import AudiorecError, NotFound

CHART_SUFFIX = ".png"


@dataclass(frozen=True)
class ItemInfo:
    item_id: str
    item_type: str
    title: str
    language: str
    genre: str


@dataclass(frozen=True)
class HistoryRow:
    item: ItemInfo
    event_type: str
    ts: datetime


@dataclass(frozen=True)
class Chart:
    name: str  # the URL name: "<source>-<file>"
    label: str
    path: Path


class Workdir:
    """``report_dir``: the evaluation report's folder (default: ``<workdir>/report``)."""

    def __init__(
        self,
        workdir: str | Path,
        report_dir: str | Path | None = None,
        history_timeout_s: float = 10.0,
    ):
        self.workdir = Path(workdir).resolve()
        self.report_dir = Path(report_dir) if report_dir else self.workdir / "report"
        self.history_timeout_s = history_timeout_s
        self._catalogues: OrderedDict[str, dict[str, ItemInfo]] = OrderedDict()
        self._lock = threading.Lock()

    def manifest(self, version: str) -> Manifest:
        """The manifest of a published version (NotFound for any other name: a version
        name from a server is never used as a path before it is found in the listing)."""
        if version not in list_versions(self.workdir):
            raise NotFound(f"version {version[:64]!r} is not published in this work directory")
        return read_manifest(artifacts_root(self.workdir) / version, verify_files=False)

    def catalogue(self, version: str) -> dict[str, ItemInfo]:
        with self._lock:
            if version in self._catalogues:
                self._catalogues.move_to_end(version)
                return self._catalogues[version]
        self.manifest(version)  # a published name
        table = pq.read_table(
            artifacts_root(self.workdir) / version / "items.parquet",
            columns=["item_id", "item_type", "title", "language", "genre"],
        ).to_pydict()
        items = {
            i: ItemInfo(i, t, title, lang or "", genre or "")
            for i, t, title, lang, genre in zip(
                table["item_id"],
                table["item_type"],
                table["title"],
                table["language"],
                table["genre"],
            )
        }
        with self._lock:
            self._catalogues[version] = items
            while len(self._catalogues) > 2:
                self._catalogues.popitem(last=False)
        return items

    def history(self, user_id: str, version: str, per_type: int = 10) -> list[HistoryRow]:
        """The listener's latest ``per_type`` events of each item type before the version's
        cut, newest first (from the dataset the version was trained on)."""
        manifest = self.manifest(version)
        events = Path(str(manifest.data.get("path", ""))) / "events.parquet"
        if not events.exists():
            raise NotFound(f"the dataset of {version} is not on this machine ({events.name})")
        catalogue = self.catalogue(version)
        rows = _query_with_timeout(
            """
            SELECT item_id, event_type, ts FROM (
              SELECT e.item_id, e.event_type, e.ts, row_number() OVER (
                PARTITION BY i.item_type ORDER BY e.ts DESC) AS n
              FROM read_parquet(?) e JOIN read_parquet(?) i USING (item_id)
              WHERE e.user_id = ? AND e.ts < CAST(? AS TIMESTAMPTZ))
            WHERE n <= ? ORDER BY ts DESC
            """,
            [
                str(events),
                str(artifacts_root(self.workdir) / version / "items.parquet"),
                user_id,
                str(manifest.data["cut"]),
                per_type,
            ],
            self.history_timeout_s,
        )
        return [HistoryRow(catalogue[i], e, ts) for i, e, ts in rows if i in catalogue]

    def charts(self, version: str | None) -> list[Chart]:
        """The evaluation report's charts, then the served version's and the HGNN's
        training curves, where they exist."""
        out = []
        if self.report_dir.is_dir():
            out += [
                Chart(f"report-{p.name}", f"evaluation: {p.stem.replace('_', ' ')}", p)
                for p in sorted(self.report_dir.glob(f"*{CHART_SUFFIX}"))
            ]
        if version is not None and version in list_versions(self.workdir):
            curve = artifacts_root(self.workdir) / version / "training_curve.png"
            if curve.is_file():
                out.append(Chart(f"towers-{curve.name}", f"two towers of {version}", curve))
        hgnn = self.workdir / "hgnn" / "training_curve.png"
        if hgnn.is_file():
            out.append(Chart(f"hgnn-{hgnn.name}", "HGNN (latest run)", hgnn))
        for folder, _ in self.readouts():
            png = folder / "readout.png"
            if png.is_file():
                out.append(Chart(f"experiment-{folder.name}", f"experiment {folder.name}", png))
        return out

    def readouts(self, newest: int = 3) -> list[tuple[Path, dict[str, Any]]]:
        """The newest experiment readouts (``audiorec experiment`` writes them under
        ``experiments/<salt>/``), newest first."""
        found = []
        for path in (self.workdir / "experiments").glob("*/readout.json"):
            try:
                found.append((path.stat().st_mtime, path.parent, json.loads(path.read_text())))
            except (OSError, ValueError):
                continue
        found.sort(key=lambda t: t[0], reverse=True)
        return [(folder, data) for _, folder, data in found[:newest]]

    def chart(self, name: str, version: str | None) -> Path:
        """A chart's file by its URL name; only the files :meth:`charts` lists."""
        for c in self.charts(version):
            if c.name == name:
                return c.path
        raise NotFound("no such chart")

    def report_markdown(self) -> str | None:
        path = self.report_dir / "report.md"
        return path.read_text() if path.is_file() else None


def _query_with_timeout(sql: str, params: list[Any], timeout_s: float) -> list[tuple[Any, ...]]:
    """One DuckDB query, interrupted after ``timeout_s`` (a history scan must not hold a
    page forever)."""
    import duckdb

    con = duckdb.connect()
    timer = threading.Timer(timeout_s, con.interrupt)
    timer.start()
    try:
        return con.execute(sql, params).fetchall()
    except duckdb.InterruptException:
        raise AudiorecError(f"the history scan took over {timeout_s:g} s; stopped") from None
    finally:
        timer.cancel()
        con.close()

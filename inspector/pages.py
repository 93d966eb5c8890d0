"""The inspector's pages as data: each builder returns ``(status, template, context)``.

A page asks the running server through the public API (:mod:`serving.client`, with the
operator's TLS and token options) what it answers now, and the work directory what
trained that answer. Every input is checked here before any call (ids: 1-256 printable
characters, as the server allows); the templates escape every value they print.
Failures become a short message on the page with the HTTP status that fits: 400 for a
bad input, 404 for an unknown id, 503 when the server does not answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from audiorec.artifact import feature_project
from audiorec.errors import AudiorecError
from inspector.workdir import Workdir
from serving.client import VERBS, CallFailed, Connection, describe, recommend, similar

MAX_ID_CHARS = 256  # the server's own bound (serving/limits.py RequestLimits.max_id_chars)
ECHO_CHARS = 40
Page = tuple[int, str, dict[str, Any]]
ReadFeatures = Callable[[str, str], dict[str, list[Any]]]  # (user_id, project) -> row


class PageError(Exception):
    """A page that cannot be shown: ``status`` (HTTP) and a short message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def checked_id(value: str | None, what: str) -> str:
    if value is None or not value.strip():
        raise PageError(400, f"enter a {what} id")
    if len(value) > MAX_ID_CHARS:
        raise PageError(400, f"a {what} id has at most {MAX_ID_CHARS} characters")
    if not value.isprintable():
        raise PageError(400, f"a {what} id is printable text")
    return value.strip()


def shown(value: str) -> str:
    """A short prefix of user input for a message."""
    return value if len(value) <= ECHO_CHARS else value[:ECHO_CHARS] + "..."


@dataclass
class Inspector:
    """``read_features``: the online store's row for a user (None: not shown)."""

    conn: Connection
    workdir: Workdir
    read_features: ReadFeatures | None = None
    timeout_s: float = 5.0
    k: int = 10

    def served(self) -> Any:
        """The server's Describe answer; PageError 503 when it does not answer."""
        try:
            return describe(self.conn, self.timeout_s)
        except CallFailed as exc:
            raise _unreachable(exc) from None

    def home(self) -> Page:
        info = self.served()
        return 200, "home.html", {"info": info}

    def listener(self, user_id: str | None, arm: str | None) -> Page:
        user_id = checked_id(user_id, "listener")
        info = self.served()
        arm = arm or ""
        if arm and arm not in {a.name for a in info.arms if a.name}:
            raise PageError(400, f"this server runs no arm {shown(arm)!r}")
        answers, errors = [], []
        started = time.perf_counter()
        for item_type in info.item_types:
            try:
                answer = recommend(
                    self.conn,
                    user_id,
                    self.k,
                    item_type,
                    self.timeout_s,
                    explain=True,
                    arm=arm,
                    inspect=True,  # looking is not an exposure
                )
                answers.append((item_type, answer))
            except CallFailed as exc:
                if exc.status == "UNAVAILABLE" and not answers:
                    raise _unreachable(exc) from None
                errors.append(f"{item_type}: {exc.status}: {exc.details[:200]}")
        ms = (time.perf_counter() - started) * 1e3
        version = answers[0][1].model_version if answers else info.model_version
        context: dict[str, Any] = {
            "user_id": user_id,
            "info": info,
            "arm": arm,
            "answers": answers,
            "errors": errors,
            "ms": ms,
            "verbs": VERBS,
            "version": version,
        }
        context.update(self._history(user_id, version))
        context.update(self._features(user_id, version))
        return 200, "listener.html", context

    def title(self, item_id: str | None) -> Page:
        item_id = checked_id(item_id, "title")
        info = self.served()
        catalogue = self.workdir.catalogue(info.model_version)
        item = catalogue.get(item_id)
        if item is None:
            raise PageError(404, f"no title {shown(item_id)!r} in {info.model_version}")
        neighbours = []
        for item_type in info.item_types:
            try:
                neighbours.append(
                    (item_type, similar(self.conn, item_id, self.k, item_type, self.timeout_s))
                )
            except CallFailed as exc:
                raise _unreachable(exc) from None
        return 200, "title.html", {"item": item, "neighbours": neighbours, "info": info}

    def model(self) -> Page:
        info = self.served()
        manifests = []
        for version in dict.fromkeys(a.model_version for a in info.arms):
            try:
                manifests.append(self.workdir.manifest(version).model_dump(mode="json"))
            except AudiorecError as exc:
                manifests.append({"version": version, "error": str(exc)[:200]})
        return (
            200,
            "model.html",
            {
                "info": info,
                "manifests": manifests,
                "charts": self.workdir.charts(info.model_version),
                "report": _render_markdown(self.workdir.report_markdown()),
                "readouts": [data for _, data in self.workdir.readouts()],
            },
        )

    def _history(self, user_id: str, version: str) -> dict[str, Any]:
        try:
            return {"history": self.workdir.history(user_id, version), "history_error": ""}
        except AudiorecError as exc:
            return {"history": [], "history_error": str(exc)[:200]}

    def _features(self, user_id: str, version: str) -> dict[str, Any]:
        if self.read_features is None:
            return {"features": None, "features_error": "not read (started without a store)"}
        try:
            project = feature_project(self.workdir.manifest(version))
            row = self.read_features(user_id, project)
        except AudiorecError as exc:
            return {"features": None, "features_error": str(exc)[:200]}
        return {
            "features": [(k, _feature_value(v[0])) for k, v in row.items()],
            "features_error": "",
        }


def _unreachable(exc: CallFailed) -> PageError:
    if exc.status == "UNAVAILABLE":
        return PageError(503, "the recommender server does not answer (is audiorec serve running?)")
    if exc.status == "UNAUTHENTICATED":
        return PageError(502, "the recommender server refused the inspector's token")
    return PageError(502, f"the recommender server answered {exc.status}: {exc.details[:200]}")


def _feature_value(value: Any) -> str:
    """A feature as a short string: a vector as its size, norm and first values."""
    if value is None:
        return "(none)"
    if isinstance(value, (list, tuple, np.ndarray)):
        v = np.asarray(value, dtype=object)
        if v.size and all(isinstance(x, (int, float, np.number)) for x in v.tolist()):
            f = np.asarray(value, np.float64)
            head = ", ".join(f"{x:.3f}" for x in f[:4])
            more = ", ..." if f.size > 4 else ""
            return f"{f.size} values, norm {np.linalg.norm(f):.3f}: [{head}{more}]"
        items = [str(x) for x in v.tolist()]
        return f"{len(items)}: " + "; ".join(items[:5]) + (" ..." if len(items) > 5 else "")
    return str(value)


def _render_markdown(text: str | None) -> str | None:
    """The report's Markdown as HTML; raw HTML in it is escaped, not passed through."""
    if text is None:
        return None
    from markdown_it import MarkdownIt

    return str(MarkdownIt("commonmark", {"html": False}).enable("table").render(text))

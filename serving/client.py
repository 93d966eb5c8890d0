"""A small client of the Recommender API (the ``audiorec recommend`` command, tests)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import grpc

from audiorec.errors import AudiorecError
from audiorec.v1 import recommender_pb2 as pb
from audiorec.v1 import recommender_pb2_grpc as pb_grpc

# what an explanation says the listener did with the item it names
VERBS = {
    "stream": "streamed",
    "intent_to_pay": "started buying",
    "follow": "followed",
    "preview": "previewed",
}


@dataclass(frozen=True)
class Connection:
    """Where the server is and how to reach it: plain, TLS (``tls_ca``: the CA to verify
    the server; ``tls_cert``/``tls_key``: a client certificate), with a bearer token."""

    target: str
    token: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    def __repr__(self) -> str:  # never print the token
        return f"Connection({self.target!r}, tls={self.tls_ca is not None})"

    def channel(self) -> grpc.Channel:
        if self.tls_ca is None and self.tls_cert is None:
            return grpc.insecure_channel(self.target)

        def read(path: str | None) -> bytes | None:
            return Path(path).read_bytes() if path else None

        try:
            creds = grpc.ssl_channel_credentials(
                read(self.tls_ca), read(self.tls_key), read(self.tls_cert)
            )
        except OSError as exc:
            raise AudiorecError(f"cannot read a TLS file: {exc.filename}: {exc.strerror}") from None
        return grpc.secure_channel(self.target, creds)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return () if not self.token else (("authorization", f"Bearer {self.token}"),)


class CallFailed(AudiorecError):
    """A call the server refused or could not answer; ``status`` is the gRPC code's name
    (UNAVAILABLE: nothing answers at the target), ``details`` the server's message."""

    def __init__(self, method: str, target: str, status: str, details: str):
        super().__init__(f"{method} at {target}: {status}: {details}")
        self.status, self.details = status, details


def _call(
    conn: Connection | str,
    method: str,
    request: Any,
    timeout: float,
    extra: tuple[tuple[str, str], ...] = (),
) -> Any:
    conn = Connection(conn) if isinstance(conn, str) else conn
    with conn.channel() as channel:
        try:
            return getattr(pb_grpc.RecommenderStub(channel), method)(
                request, timeout=timeout, metadata=conn.metadata() + extra
            )
        except grpc.RpcError as exc:
            raise CallFailed(method, conn.target, exc.code().name, exc.details() or "") from None


def recommend(
    target: Connection | str,
    user_id: str,
    k: int = 10,
    item_type: str = "audiobook",
    timeout: float = 5.0,
    languages: Sequence[str] = (),
    include_consumed: bool = False,
    explain: bool = False,
    arm: str = "",
    inspect: bool = False,
) -> pb.RecommendResponse:
    """``arm``: answer as this experiment arm ("": the user's own); ``inspect``: a look at
    the answer, not one shown to the listener (the server logs no exposure for it)."""
    response: pb.RecommendResponse = _call(
        target,
        "Recommend",
        pb.RecommendRequest(
            user_id=user_id,
            k=k,
            type=item_type,
            languages=list(languages),
            include_consumed=include_consumed,
            explain=explain,
            arm=arm,
        ),
        timeout,
        (("x-audiorec-purpose", "inspect"),) if inspect else (),
    )
    return response


def record_event(
    target: Connection | str,
    user_id: str,
    item_id: str,
    event_type: str = "stream",
    timestamp_ms: int = 0,
    event_id: str = "",
    timeout: float = 5.0,
) -> pb.RecordEventsResponse:
    """One event (``timestamp_ms`` 0: the server's now)."""
    response: pb.RecordEventsResponse = _call(
        target,
        "RecordEvents",
        pb.RecordEventsRequest(
            events=[
                pb.Event(
                    user_id=user_id,
                    item_id=item_id,
                    event_type=event_type,
                    timestamp_ms=timestamp_ms,
                    event_id=event_id,
                )
            ]
        ),
        timeout,
    )
    return response


def record_item(
    target: Connection | str,
    item_id: str,
    item_type: str,
    title: str,
    description: str = "",
    language: str = "",
    genre: str = "",
    timeout: float = 10.0,
) -> pb.RecordItemsResponse:
    """Publish one title to the running model (recommendable at once)."""
    response: pb.RecordItemsResponse = _call(
        target,
        "RecordItems",
        pb.RecordItemsRequest(
            items=[
                pb.NewItem(
                    item_id=item_id,
                    type=item_type,
                    title=title,
                    description=description,
                    language=language,
                    genre=genre,
                )
            ]
        ),
        timeout,
    )
    return response


def similar(
    target: Connection | str,
    item_id: str,
    k: int = 10,
    item_type: str | None = None,
    timeout: float = 5.0,
) -> pb.RecommendSimilarResponse:
    response: pb.RecommendSimilarResponse = _call(
        target,
        "RecommendSimilar",
        pb.RecommendSimilarRequest(item_id=item_id, k=k, type=item_type or ""),
        timeout,
    )
    return response


def describe(target: Connection | str, timeout: float = 5.0) -> pb.DescribeResponse:
    """What the server answers with: its version per experiment arm, its item types."""
    response: pb.DescribeResponse = _call(target, "Describe", pb.DescribeRequest(), timeout)
    return response


def format_answer(asked: str, response: pb.RecommendResponse | pb.RecommendSimilarResponse) -> str:
    """A readable table: rank, title, item id, type, score."""
    head = f"{asked}: model {response.model_version}"
    if getattr(response, "arm", ""):
        head += f" (arm {response.arm})"
    if hasattr(response, "strategy"):
        head += f", {pb.Strategy.Name(response.strategy)}"
        if response.reason:
            head += f" ({response.reason})"
    width = max([len(i.title) for i in response.items] + [5])
    lines = [head, f"  {'#':>3}  {'title':<{width}}  {'item_id':<10}  {'type':<9}  score"]
    for n, i in enumerate(response.items, 1):
        because = (
            f"  because you {VERBS.get(i.because_event, 'listened to')} {i.because_title}"
            if i.because_item_id
            else ""
        )
        lines.append(
            f"  {n:>3}  {i.title:<{width}}  {i.item_id:<10}  {i.type:<9}  {i.score:.3f}{because}"
        )
    if not response.items:
        lines.append("  (no items)")
    return "\n".join(lines)

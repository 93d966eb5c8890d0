"""The Recommender service: thin handlers, status codes mapped once.

Each handler validates nothing itself: it hands the request to the current
:class:`~serving.recommender.Recommender` of the caller's arm and maps its errors to
status codes once (InvalidRequest -> INVALID_ARGUMENT, NotFound -> NOT_FOUND,
DeadlineExceeded -> DEADLINE_EXCEEDED, Overloaded -> RESOURCE_EXHAUSTED, Unsupported ->
FAILED_PRECONDITION, AlreadyExists -> ALREADY_EXISTS). Bytes that do
not parse as the request message get INVALID_ARGUMENT too (the deserializer never
raises), and every refusal is counted in the metrics. Every Recommend answer is logged as
an exposure (serving/accepted.py) when the server keeps a log.

Capacity (:class:`Admission`): at most ``workers`` requests compute at once (the rest
wait for a slot, never past their deadline); beyond ``max_concurrent_rpcs`` in flight,
calls are refused at once.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import grpc

from audiorec.artifact import feature_project
from audiorec.errors import AudiorecError, InvalidRequest, Overloaded
from audiorec.v1 import recommender_pb2 as pb
from serving.accepted import AcceptedLog
from serving.admission import Admission
from serving.arms import Experiment
from serving.limits import RequestLimits, echo
from serving.live import LiveEntry, NewItem, check_items
from serving.metrics import Metrics
from serving.recommender import Answer, Recommender
from serving.reload import ModelHolder

log = logging.getLogger("audiorec.serving")

SERVICE = pb.DESCRIPTOR.services_by_name["Recommender"].full_name
# The API's enum names two types; any type travels by name in the `type` fields.
TYPE_NAMES: dict[int, str] = {pb.AUDIOBOOK: "audiobook", pb.PODCAST: "podcast"}
TYPE_VALUES: dict[str, Any] = {v: k for k, v in TYPE_NAMES.items()}
# Codes that describe the client's call, not the server: counted, logged at DEBUG, and
# summarised at WARNING at most once per CLIENT_LOG_EVERY_S (a fuzzer must not flood logs).
CLIENT_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
QUIET_CODES = CLIENT_CODES | {grpc.StatusCode.OK}  # logged at DEBUG only
CLIENT_LOG_EVERY_S = 10.0


def _item_type(request: Any, limits: RequestLimits) -> str | None:
    """The requested type's name, from ``type`` or the ``item_type`` enum (None: neither
    set). Whether the model serves it is the recommender's to say."""
    name, value = request.type, request.item_type
    if value and value not in TYPE_NAMES:
        raise InvalidRequest(
            f"item_type is {value}; expected AUDIOBOOK (1) or PODCAST (2), "
            "or any served type by name in `type`"
        )
    if len(name) > limits.max_id_chars:
        raise InvalidRequest(
            f"type has {len(name):,} chars; the limit is {limits.max_id_chars} (max_id_chars)"
        )
    by_enum = TYPE_NAMES.get(value)
    if name and by_enum and name != by_enum:
        raise InvalidRequest(
            f"type {echo(name)} and item_type {pb.ItemType.Name(value)} disagree; set one of them"
        )
    return name or by_enum


STRATEGY_VALUES: dict[str, Any] = {v.name: v.number for v in pb.Strategy.DESCRIPTOR.values}


def _add_items(items: Any, answer: Answer) -> None:
    """``answer``'s items onto the response's repeated field ``items``, built in place
    (no message built and then copied in); the explanation fields only where set."""
    for i in answer.items:
        item = items.add(
            item_id=i.item_id,
            item_type=TYPE_VALUES.get(i.item_type, pb.ITEM_TYPE_UNSPECIFIED),
            type=i.item_type,
            score=i.score,
            title=i.title,
        )
        if i.because_item_id or i.because_title or i.because_event:
            item.because_item_id = i.because_item_id
            item.because_title = i.because_title
            item.because_event = i.because_event


class _Unparseable:
    """What the deserializer hands over for bytes that are not the request message."""


UNPARSEABLE = _Unparseable()


def _parser(message: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return message.FromString(data)
        except Exception:  # noqa: BLE001 - DecodeError, bad UTF-8, too deep: all the same
            return UNPARSEABLE

    return parse


class _ClientErrorLog:
    """Counts client-side errors; one WARNING line per window summarises them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._since = time.monotonic()

    def add(self, code: str) -> None:
        with self._lock:
            self._counts[code] = self._counts.get(code, 0) + 1
            now = time.monotonic()
            if now - self._since < CLIENT_LOG_EVERY_S:
                return
            counts, self._counts, since, self._since = self._counts, {}, self._since, now
        log.warning(
            "client errors", extra={"fields": {"window_s": round(now - since, 1), **counts}}
        )


class RecommenderService:
    """``arms``: (name, holder) per experiment arm ("" alone without an experiment)."""

    def __init__(
        self,
        arms: list[tuple[str, ModelHolder]],
        experiment: Experiment,
        metrics: Metrics,
        admission: Admission,
        accepted: AcceptedLog | None = None,
    ):
        self.arms, self.experiment = arms, experiment
        self.accepted = accepted
        # each arm's configured share (exposures and Describe carry it); none: one arm, 1.0
        self.shares = {a.name: a.share for a in experiment.arms}
        self.metrics = metrics
        self.admission = admission
        self._client_errors = _ClientErrorLog()

    def _run(
        self,
        rpc: str,
        request: Any,
        context: Any,
        fn: Callable[[Recommender, float | None], tuple[Any, str]],
        route_key: str = "",
    ) -> Any:
        """``route_key``: the user id a call's arm is assigned by ("": the first arm); a
        request's ``arm`` field, where it has one, names the arm instead."""
        start = time.perf_counter()
        strategy, code = "", grpc.StatusCode.OK
        arm, holder = self.arms[self.experiment.assign(route_key) if route_key else 0]
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        try:
            if request is UNPARSEABLE:
                self.metrics.rejected.labels(reason="unparseable").inc()
                raise InvalidRequest(f"the request bytes are not a valid {rpc}Request message")
            forced = bool(getattr(request, "arm", ""))
            if forced:
                arm, holder = self._named_arm(request.arm)
            with self.admission.enter(deadline):
                response, strategy = fn(holder.current, deadline)
            if arm and hasattr(response, "arm"):
                response.arm = arm
            if self.accepted is not None and rpc == "Recommend" and not _inspecting(context):
                self._expose(request, response, arm, forced)
            return response
        except AudiorecError as exc:
            code = grpc.StatusCode[exc.status]
            if isinstance(exc, Overloaded):
                self.metrics.rejected.labels(reason="overloaded").inc()
            message = (
                str(exc)
                if code is not grpc.StatusCode.INTERNAL
                else f"internal error ({type(exc).__name__})"
            )
            if code is grpc.StatusCode.INTERNAL:
                log.exception("internal error", extra={"fields": {"rpc": rpc}})
        except Exception as exc:  # noqa: BLE001 - a bug: answer INTERNAL, keep serving
            code, message = grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__})"
            log.exception("internal error", extra={"fields": {"rpc": rpc}})
        finally:
            seconds = time.perf_counter() - start
            self.metrics.observe_request(rpc, strategy or "none", code.name, arm, seconds)
            if code in CLIENT_CODES:
                self._client_errors.add(code.name)
            if code not in QUIET_CODES or log.isEnabledFor(logging.DEBUG):
                log.log(
                    logging.DEBUG if code in QUIET_CODES else logging.ERROR,
                    "request",
                    extra={
                        "fields": {
                            "rpc": rpc,
                            "code": code.name,
                            "strategy": strategy,
                            "arm": arm,
                            "ms": round(seconds * 1e3, 3),
                        }
                    },
                )
        context.abort(code, message)

    def _expose(self, request: Any, response: Any, arm: str, forced: bool) -> None:
        assert self.accepted is not None
        self.accepted.exposure(
            {
                "user_id": request.user_id,
                "arm": arm,
                "share": self.shares.get(arm, 1.0),
                "salt": self.experiment.salt if self.shares else "",
                "forced": forced,
                "version": response.model_version,
                "type": response.items[0].type if response.items else request.type,
                "strategy": pb.Strategy.Name(response.strategy),
                "items": [i.item_id for i in response.items],
            }
        )

    def _named_arm(self, name: str) -> tuple[str, ModelHolder]:
        for arm in self.arms:
            if arm[0] and arm[0] == name:
                return arm
        names = ", ".join(n for n, _ in self.arms if n) or "none: no experiment runs"
        raise InvalidRequest(f"arm {name[:64]!r} is not served (this server's arms: {names})")

    def Recommend(self, request: Any, context: Any) -> Any:
        def answer(rec: Recommender, deadline: float | None) -> tuple[Any, str]:
            a = rec.recommend(
                request.user_id,
                request.k,
                _item_type(request, rec.limits),
                request.include_consumed,
                request.languages,
                deadline,
                request.explain,
            )
            for stage, ms in a.timings_ms.items():
                self.metrics.observe_stage(stage, ms / 1e3)
            if a.strategy == "FALLBACK":
                reason = "store_unavailable" if "unavailable" in a.reason else "unknown_user"
                self.metrics.fallbacks.labels(reason=reason).inc()
            response = pb.RecommendResponse(
                model_version=a.model_version,
                strategy=STRATEGY_VALUES[a.strategy],
                reason=a.reason,
            )
            _add_items(response.items, a)
            return response, a.strategy

        return self._run("Recommend", request, context, answer, getattr(request, "user_id", ""))

    def RecommendSimilar(self, request: Any, context: Any) -> Any:
        def answer(rec: Recommender, deadline: float | None) -> tuple[Any, str]:
            a = rec.similar(request.item_id, request.k, _item_type(request, rec.limits))
            response = pb.RecommendSimilarResponse(model_version=a.model_version)
            _add_items(response.items, a)
            return response, "SIMILAR"

        return self._run("RecommendSimilar", request, context, answer)

    def RecordEvents(self, request: Any, context: Any) -> Any:
        def record(first: Recommender, deadline: float | None) -> tuple[Any, str]:
            # every arm's project gets the events (arms on one feature generation share it)
            done: dict[str, Any] = {}
            for _, holder in self.arms:
                rec = holder.current
                project = feature_project(rec.artifact.manifest)
                if project not in done:
                    done[project] = rec.record(request.events)
            a = done[feature_project(first.artifact.manifest)]
            self.metrics.events.labels(result="recorded").inc(a.recorded)
            self.metrics.events.labels(result="duplicate").inc(a.duplicates)
            self.metrics.events.labels(result="before_cut").inc(a.before_cut)
            return pb.RecordEventsResponse(
                recorded=a.recorded,
                duplicates=a.duplicates,
                before_cut=a.before_cut,
                model_version=first.version,
            ), "RECORD"

        return self._run("RecordEvents", request, context, record)

    def RecordItems(self, request: Any, context: Any) -> Any:
        def take(first: Recommender, deadline: float | None) -> tuple[Any, str]:
            items = check_items(request.items, first.types.names, first.limits)
            entries, existing = first.prepare_titles(items)
            if entries and self.accepted is not None:  # kept before any arm shows them
                self.accepted.items(
                    [
                        {**e.item.record(), "vector": e.vector.tolist(), "hgnn": e.hgnn.tolist()}
                        for e in entries
                    ],
                    first.version,
                )
            created = first.take_in(entries)
            self._other_arms_take_in(first, items, entries)
            existing += len(entries) - created  # taken in by a concurrent call meanwhile
            self.metrics.items.labels(result="created").inc(created)
            self.metrics.items.labels(result="existing").inc(existing)
            return pb.RecordItemsResponse(
                created=created, existing=existing, model_version=first.version
            ), "RECORD_ITEMS"

        return self._run("RecordItems", request, context, take)

    def _other_arms_take_in(
        self, first: Recommender, items: list[NewItem], entries: list[LiveEntry]
    ) -> None:
        """The other arms show the titles at once too: the first arm's vectors where they
        serve the same version, their own models' otherwise. The titles are accepted and
        logged already, so an arm that cannot take one (full, or without the live export)
        is logged, not the caller's error; the log sync retries it later."""
        for name, holder in self.arms:
            rec = holder.current
            if rec is first:
                continue
            try:
                rec.take_in(
                    entries if rec.version == first.version else rec.prepare_titles(items)[0]
                )
            except AudiorecError as exc:
                log.warning(
                    "live titles not taken in by an arm",
                    extra={"fields": {"arm": name, "why": str(exc)[:200]}},
                )

    def Describe(self, request: Any, context: Any) -> Any:
        def describe(first: Recommender, deadline: float | None) -> tuple[Any, str]:
            return pb.DescribeResponse(
                model_version=first.version,
                arms=[
                    pb.ServedArm(
                        name=n,
                        model_version=h.current.version,
                        share=self.shares.get(n, 1.0),
                        live_items=len(h.current.live),
                    )
                    for n, h in self.arms
                ],
                item_types=list(first.artifact.types.names),
            ), "DESCRIBE"

        return self._run("Describe", request, context, describe)

    def handler(self) -> grpc.GenericRpcHandler:
        def method(fn: Callable[[Any, Any], Any], request: Any, response: Any) -> Any:
            return grpc.unary_unary_rpc_method_handler(
                fn,
                request_deserializer=_parser(request),
                response_serializer=response.SerializeToString,
            )

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Recommend": method(self.Recommend, pb.RecommendRequest, pb.RecommendResponse),
                "RecommendSimilar": method(
                    self.RecommendSimilar, pb.RecommendSimilarRequest, pb.RecommendSimilarResponse
                ),
                "RecordEvents": method(
                    self.RecordEvents, pb.RecordEventsRequest, pb.RecordEventsResponse
                ),
                "RecordItems": method(
                    self.RecordItems, pb.RecordItemsRequest, pb.RecordItemsResponse
                ),
                "Describe": method(self.Describe, pb.DescribeRequest, pb.DescribeResponse),
            },
        )


# A call that looks at an answer rather than shows it to a listener (the inspector):
# never logged as an exposure, so looking does not enter an experiment's readout.
PURPOSE_KEY, INSPECT = "x-audiorec-purpose", "inspect"


def _inspecting(context: Any) -> bool:
    try:
        return any(k == PURPOSE_KEY and v == INSPECT for k, v in context.invocation_metadata())
    except (AttributeError, TypeError):  # a context without metadata (tests, benchmarks)
        return False

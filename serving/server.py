"""The gRPC server: ``create_server`` builds it, handlers stay thin.

Each handler validates nothing itself: it hands the request to the current
:class:`~serving.recommender.Recommender` and maps its errors to status codes once
(InvalidRequest -> INVALID_ARGUMENT, NotFound -> NOT_FOUND, DeadlineExceeded ->
DEADLINE_EXCEEDED, Overloaded -> RESOURCE_EXHAUSTED). Bytes that do not parse as the
request message get INVALID_ARGUMENT too (the deserializer never raises), and every
refusal is counted in the metrics.

Capacity: at most ``workers`` requests compute at once (the rest wait for a slot, never
past their deadline); beyond ``max_concurrent_rpcs`` in flight, calls are refused at once;
the thread pool keeps ``health_threads`` more, so the health check answers in
milliseconds whatever Recommend is doing. The standard health service reports SERVING
only once an artifact is loaded; reflection is switchable; TLS, client certificates and a
bearer token come from :mod:`serving.security`; the artifact is hot-reloaded
(serving/reload.py); metrics go to a per-server Prometheus registry.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pydantic import Field

from audiorec.artifact import Manifest, feature_project, read_manifest
from audiorec.config import StrictConfig
from audiorec.errors import (
    AudiorecError,
    ContractError,
    DeadlineExceeded,
    InvalidRequest,
    Overloaded,
)
from audiorec.eventlog import LogConfig
from audiorec.featurestore import FeatureStoreConfig
from audiorec.secrets import redact
from audiorec.v1 import recommender_pb2 as pb
from serving.accepted import AcceptedLog
from serving.arms import CURRENT, Experiment
from serving.artifact import Artifact
from serving.events import EventLimits, Recorder
from serving.features import OnlineFeatures, StoreGuardConfig
from serving.limits import RequestLimits, echo
from serving.metrics import Metrics
from serving.recommender import Answer, Recommender
from serving.reload import ModelHolder
from serving.security import SecurityConfig, TokenInterceptor, check_exposure, server_credentials
from serving.user_lock import UserLocks

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


class ServerConfig(StrictConfig):
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)  # 0: any free port (create_server returns it)
    workers: int = Field(4, ge=1)  # requests computing at once; more contend for the GIL
    # Process-wide, applied by the process's owner (serving/tuning.py, tune_process):
    # freeze what loading allocated out of the garbage collector's reach, and the GIL
    # switch interval (Python's default: 5 ms)
    tune_gc: bool = True
    gil_switch_interval_ms: float | None = Field(0.5, gt=0)
    # Beyond this many Recommend calls in flight new ones get RESOURCE_EXHAUSTED at once:
    # under overload the server sheds load instead of queueing into everyone's deadline.
    max_concurrent_rpcs: int = Field(64, ge=1)
    health_threads: int = Field(2, ge=1)  # threads only health checks and refusals use
    reload_interval_s: float = Field(2.0, gt=0)
    # SO_REUSEPORT: several processes share the port (serve --processes, processes.py);
    # off otherwise, so a second server on a taken port fails instead of sharing it
    reuse_port: bool = False
    # the user tower's runtime: ONNX Runtime when the version has its export (auto), or
    # TensorFlow's SavedModel (serving/tower.py)
    tower_runtime: Literal["auto", "onnx", "tensorflow"] = "auto"
    metrics_port: int | None = Field(None, ge=0, le=65535)  # Prometheus HTTP; None: off
    store: FeatureStoreConfig = Field(default_factory=FeatureStoreConfig)
    store_guard: StoreGuardConfig = Field(default_factory=StoreGuardConfig)
    limits: RequestLimits = Field(default_factory=RequestLimits)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    experiment: Experiment = Field(default_factory=Experiment)  # A/B arms (serving/arms.py)
    events: EventLimits = Field(default_factory=EventLimits)
    log: LogConfig = Field(default_factory=LogConfig)  # events and exposures kept (accepted.py)


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


def _items(answer: Answer) -> list[pb.Item]:
    return [
        pb.Item(
            item_id=i.item_id,
            item_type=TYPE_VALUES.get(i.item_type, pb.ITEM_TYPE_UNSPECIFIED),
            type=i.item_type,
            score=i.score,
            title=i.title,
            because_item_id=i.because_item_id,
            because_title=i.because_title,
            because_event=i.because_event,
        )
        for i in answer.items
    ]


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


class Admission:
    """At most ``active`` requests compute at once; at most ``in_flight`` wait or compute."""

    def __init__(self, active: int, in_flight: int):
        self._slots = threading.BoundedSemaphore(active)
        self._lock = threading.Lock()
        self._in_flight, self._max = 0, in_flight

    @contextmanager
    def enter(self, deadline: float | None) -> Iterator[None]:
        with self._lock:
            if self._in_flight >= self._max:
                raise Overloaded(
                    f"server at capacity ({self._max} calls in flight); retry with backoff"
                )
            self._in_flight += 1
        try:
            wait = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if not self._slots.acquire(timeout=wait):
                raise DeadlineExceeded("deadline passed while waiting for a free worker")
            try:
                yield
            finally:
                self._slots.release()
        finally:
            with self._lock:
                self._in_flight -= 1


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
            if self.accepted is not None and rpc == "Recommend":
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
            self.metrics.requests.labels(
                rpc=rpc, strategy=strategy or "none", code=code.name, arm=arm
            ).observe(seconds)
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
        shares = {a.name: a.share for a in self.experiment.arms}
        self.accepted.exposure(
            {
                "user_id": request.user_id,
                "arm": arm,
                "share": shares.get(arm, 1.0),
                "salt": self.experiment.salt if shares else "",
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
                self.metrics.stages.labels(stage=stage).observe(ms / 1e3)
            if a.strategy == "FALLBACK":
                reason = "store_unavailable" if "unavailable" in a.reason else "unknown_user"
                self.metrics.fallbacks.labels(reason=reason).inc()
            return pb.RecommendResponse(
                items=_items(a),
                model_version=a.model_version,
                strategy=pb.Strategy.Value(a.strategy),
                reason=a.reason,
            ), a.strategy

        return self._run("Recommend", request, context, answer, getattr(request, "user_id", ""))

    def RecommendSimilar(self, request: Any, context: Any) -> Any:
        def answer(rec: Recommender, deadline: float | None) -> tuple[Any, str]:
            a = rec.similar(request.item_id, request.k, _item_type(request, rec.limits))
            return pb.RecommendSimilarResponse(
                items=_items(a), model_version=a.model_version
            ), "SIMILAR"

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

    def Describe(self, request: Any, context: Any) -> Any:
        def describe(first: Recommender, deadline: float | None) -> tuple[Any, str]:
            shares = {a.name: a.share for a in self.experiment.arms}
            return pb.DescribeResponse(
                model_version=first.version,
                arms=[
                    pb.ServedArm(name=n, model_version=h.current.version, share=shares.get(n, 1.0))
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
                "Describe": method(self.Describe, pb.DescribeRequest, pb.DescribeResponse),
            },
        )


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    holder: ModelHolder  # the first arm's (the only one without an experiment)
    arms: list[tuple[str, ModelHolder]]
    metrics: Metrics
    health: health.HealthServicer
    features: OnlineFeatures
    accepted: AcceptedLog | None = None

    def stop(self, grace: float = 5.0) -> None:
        """Refuse new calls, let in-flight ones finish (up to ``grace`` s), stop watching."""
        self.health.enter_graceful_shutdown()
        for _, holder in self.arms:
            holder.stop()
        self.server.stop(grace).wait()
        self.features.close()
        if self.accepted is not None:
            self.accepted.close()


def create_server(workdir: str | Path, cfg: ServerConfig = ServerConfig()) -> RunningServer:
    """Load the current artifact and the feature store, and return a started server."""
    sec = cfg.security
    check_exposure(cfg.host, sec)
    credentials = server_credentials(sec)
    metrics = Metrics()
    features = OnlineFeatures(
        workdir,
        cfg.store,
        cfg.store_guard,
        on_state=lambda is_open: metrics.breaker_open.set(int(is_open)),
    )

    accepted = AcceptedLog(workdir, cfg.log, metrics) if cfg.log.enabled else None
    # a user's real-time read-modify-write, exclusive across this server's processes
    locks = UserLocks(workdir, cfg.store, timeout_s=cfg.store_guard.write_timeout_s)

    def build(directory: Path) -> Recommender:
        manifest = read_manifest(directory, verify_files=False)  # Artifact.load checks all
        project = feature_project(manifest)
        check_lineage(workdir, cfg.store, project, manifest)
        served = features.served_features(project)
        artifact = Artifact.load(
            directory, served_user_features=served, tower_runtime=cfg.tower_runtime
        )
        recorder = Recorder(
            artifact,
            functools.partial(features.read_users_now, project=project),
            functools.partial(features.read_items_now, project=project),
            functools.partial(features.push_now, project=project),
            cfg.limits,
            cfg.events,
            dim=_preference_dim(artifact),
            run=functools.partial(features.run, what="recording events"),
            lock=functools.partial(locks.hold, project),
            log=None
            if accepted is None
            else functools.partial(accepted.events, version=artifact.version),
        )
        return Recommender(artifact, features.reader(project), cfg.limits, recorder)

    def holder_for(arm: str, version: str) -> ModelHolder:
        def swapped(new: str) -> None:
            metrics.serving(new, arm)
            metrics.reloads.labels("ok").inc()

        return ModelHolder(
            workdir,
            build,
            on_swap=swapped,
            on_refused=lambda v, e: metrics.reloads.labels("refused").inc(),
            pinned=None if version == CURRENT else version,
        )

    arms = [(a.name, holder_for(a.name, a.version)) for a in cfg.experiment.arms] or [
        ("", holder_for("", CURRENT))
    ]
    holder = arms[0][1]
    interceptors = (
        []
        if sec.token is None
        else [
            TokenInterceptor(
                sec.token, on_reject=lambda: metrics.rejected.labels(reason="unauthenticated").inc()
            )
        ]
    )
    pool = cfg.max_concurrent_rpcs + cfg.health_threads
    limit = cfg.limits.max_receive_bytes
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=pool),
        interceptors=interceptors,
        # a memory guard only: Recommend sheds itself at max_concurrent_rpcs
        maximum_concurrent_rpcs=4 * pool,
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_metadata_size", 16 * 1024),
            ("grpc.so_reuseport", int(cfg.reuse_port)),
        ],
    )
    service = RecommenderService(
        arms, cfg.experiment, metrics, Admission(cfg.workers, cfg.max_concurrent_rpcs), accepted
    )
    server.add_generic_rpc_handlers((service.handler(),))
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if sec.reflection:
        reflection.enable_server_reflection(
            (
                SERVICE,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
    address = f"{cfg.host}:{cfg.port}"
    port = (
        server.add_insecure_port(address)
        if credentials is None
        else server.add_secure_port(address, credentials)
    )
    if port == 0:
        raise AudiorecError(f"cannot listen on {cfg.host}:{cfg.port} (in use or not allowed)")
    if cfg.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(cfg.metrics_port, addr=cfg.host, registry=metrics.registry)
    with features.warming():
        for _, h in arms:
            warm_up(h.current)
    server.start()
    for _, h in arms:
        h.start(cfg.reload_interval_s)
    for name in ("", SERVICE):  # SERVING only now: the artifact and the store are loaded
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "serving",
        extra={
            "fields": {
                "address": f"{cfg.host}:{port}",
                "version": holder.current.version,
                "arms": {name: h.current.version for name, h in arms if name},
                "tls": credentials is not None,
                "token": sec.token is not None,
                "reflection": sec.reflection,
            }
        },
    )
    return RunningServer(server, port, holder, arms, metrics, health_servicer, features, accepted)


def _preference_dim(artifact: Artifact) -> int:
    """The HGNN embedding width of the preference vectors, from the tower's inputs (0:
    the tower reads none; then the events' item embeddings say)."""
    names = set(artifact.types.hgnn_user_features())
    return next((s.dim for s in artifact.manifest.user_features if s.name in names), 0)


def check_lineage(
    workdir: str | Path, store: FeatureStoreConfig, project: str, manifest: Manifest
) -> None:
    """Refuse a version whose online features (its project) were loaded from another HGNN
    than the one it was trained with; warn when no complete load is recorded (a store
    loaded outside the pipeline)."""
    from audiorec.featurestore import online_lineage

    lineage = online_lineage(workdir, store, project)
    trained = manifest.upstream.get("hgnn_version")
    if lineage is None:
        log.warning(
            "no complete materialization recorded for the version's online features",
            extra={"fields": {"version": manifest.version, "project": project}},
        )
    elif trained is not None and lineage["hgnn_version"] != trained:
        raise ContractError(
            f"version {manifest.version} was trained with HGNN {trained}, but "
            f"the online store's {project} holds preference vectors from "
            f"HGNN {lineage['hgnn_version']}"
        )


def warm_up(recommender: Recommender, calls: int = 50) -> None:
    """Run the request path before reporting SERVING: the first calls open the store's
    connection, trace the tower's signature and page in the index (tens of ms each)."""
    art = recommender.artifact
    users = list(art.users)[:calls] or ["warm-up"]
    names = art.types.names  # every served type's index gets paged in
    for i in range(calls):
        recommender.recommend(users[i % len(users)], 10, names[i % len(names)])


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, message, and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {
            k: redact(v) if isinstance(v, str) else v
            for k, v in getattr(record, "fields", {}).items()
        }
        line = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "msg": redact(record.getMessage()),
            **fields,
        }
        if record.exc_info:
            line["error"] = redact(self.formatException(record.exc_info))[-2000:]
        return json.dumps(line)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("audiorec")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False

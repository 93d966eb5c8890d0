"""The gRPC server: ``create_server`` builds it, handlers stay thin.

Each handler validates nothing itself: it hands the request to the current
:class:`~serving.recommender.Recommender` and maps its errors to status codes
(InvalidRequest -> INVALID_ARGUMENT, NotFound -> NOT_FOUND, DeadlineExceeded ->
DEADLINE_EXCEEDED). The standard health service reports SERVING only once an artifact
is loaded; server reflection lists the Recommender service; the artifact is hot-reloaded
(serving/reload.py); metrics go to a per-server Prometheus registry, optionally exposed
over HTTP.
"""

from __future__ import annotations

import gc
import json
import logging
import sys
import time
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pydantic import Field

from audiorec.config import StrictConfig
from audiorec.errors import AudiorecError, DeadlineExceeded, InvalidRequest, NotFound
from audiorec.v1 import recommender_pb2 as pb
from audiorec.v1 import recommender_pb2_grpc as pb_grpc
from serving.artifact import Artifact
from serving.features import OnlineFeatures
from serving.metrics import Metrics
from serving.recommender import Answer, Recommender
from serving.reload import ModelHolder
from training.features.config import FeatureStoreConfig

log = logging.getLogger("audiorec.serving")
SERVICE = pb.DESCRIPTOR.services_by_name["Recommender"].full_name
TYPE_NAMES = {pb.AUDIOBOOK: "audiobook", pb.PODCAST: "podcast"}
TYPE_VALUES = {v: k for k, v in TYPE_NAMES.items()}


class ServerConfig(StrictConfig):
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)  # 0: any free port (create_server returns it)
    workers: int = Field(4, ge=1)  # more threads only contend for the GIL on 2 cores
    # Freeze what loading allocated out of the garbage collector's reach and collect
    # less often: full collections over the loaded artifact were the p99 spikes.
    tune_gc: bool = True
    # How long a thread may hold the GIL while another waits (Python's default: 5 ms).
    # The gRPC poller thread needs the GIL to hand each call to a worker; at 5 ms every
    # busy moment delays dispatch by up to that much, which is the p99.
    gil_switch_interval_ms: float | None = Field(0.5, gt=0)
    # Beyond this many calls in flight new ones get RESOURCE_EXHAUSTED at once: under
    # overload the server sheds load instead of queueing into everyone's deadline.
    max_concurrent_rpcs: int = Field(64, ge=1)
    reload_interval_s: float = Field(2.0, gt=0)
    metrics_port: int | None = Field(None, ge=0, le=65535)  # Prometheus HTTP; None: off
    store: FeatureStoreConfig = Field(default_factory=FeatureStoreConfig)


def _item_type(value: int) -> str:
    if value not in TYPE_NAMES:
        got = pb.ItemType.Name(value) if value in pb.ItemType.values() else str(value)
        raise InvalidRequest(f"item_type is {got}; expected AUDIOBOOK (1) or PODCAST (2)")
    return TYPE_NAMES[value]


def _items(answer: Answer) -> list:
    return [pb.Item(item_id=i.item_id, item_type=TYPE_VALUES[i.item_type], score=i.score,
                    title=i.title) for i in answer.items]


class RecommenderService(pb_grpc.RecommenderServicer):
    def __init__(self, holder: ModelHolder, metrics: Metrics):
        self.holder = holder
        self.metrics = metrics

    def _run(self, rpc: str, context, fn):
        start = time.perf_counter()
        strategy, code = "", grpc.StatusCode.OK
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        try:
            response, strategy = fn(self.holder.current, deadline)
            return response
        except InvalidRequest as exc:
            code, message = grpc.StatusCode.INVALID_ARGUMENT, str(exc)
        except NotFound as exc:
            code, message = grpc.StatusCode.NOT_FOUND, str(exc)
        except DeadlineExceeded as exc:
            code, message = grpc.StatusCode.DEADLINE_EXCEEDED, str(exc)
        except Exception as exc:  # noqa: BLE001 - a bug: answer INTERNAL, keep serving
            code, message = grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}"
        finally:
            seconds = time.perf_counter() - start
            self.metrics.requests.labels(rpc=rpc, strategy=strategy or "none",
                                         code=code.name).observe(seconds)
            if log.isEnabledFor(logging.DEBUG) or code != grpc.StatusCode.OK:
                log.log(logging.DEBUG if code == grpc.StatusCode.OK else logging.WARNING,
                        "request", extra={"fields": {"rpc": rpc, "code": code.name,
                                                     "strategy": strategy,
                                                     "ms": round(seconds * 1e3, 3)}})
        context.abort(code, message)

    def Recommend(self, request, context):
        def answer(rec: Recommender, deadline):
            a = rec.recommend(request.user_id, request.k, _item_type(request.item_type),
                              request.include_consumed, list(request.languages), deadline)
            for stage, ms in a.timings_ms.items():
                self.metrics.stages.labels(stage=stage).observe(ms / 1e3)
            if a.strategy == "FALLBACK":
                reason = "store_unavailable" if "unavailable" in a.reason else "unknown_user"
                self.metrics.fallbacks.labels(reason=reason).inc()
            return pb.RecommendResponse(items=_items(a), model_version=a.model_version,
                                        strategy=pb.Strategy.Value(a.strategy),
                                        reason=a.reason), a.strategy
        return self._run("Recommend", context, answer)

    def RecommendSimilar(self, request, context):
        def answer(rec: Recommender, deadline):
            a = rec.similar(request.item_id, request.k, _item_type(request.item_type))
            return pb.RecommendSimilarResponse(items=_items(a),
                                               model_version=a.model_version), "SIMILAR"
        return self._run("RecommendSimilar", context, answer)


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    holder: ModelHolder
    metrics: Metrics
    health: health.HealthServicer

    def stop(self, grace: float = 5.0) -> None:
        """Refuse new calls, let in-flight ones finish (up to ``grace`` s), stop watching."""
        self.health.enter_graceful_shutdown()
        self.holder.stop()
        self.server.stop(grace).wait()


def create_server(workdir: str | Path, cfg: ServerConfig = ServerConfig()) -> RunningServer:
    """Load the current artifact and the feature store, and return a started server."""
    features = OnlineFeatures(workdir, cfg.store)
    served = features.served_features()
    metrics = Metrics()

    def build(directory: Path) -> Recommender:
        return Recommender(Artifact.load(directory, served_user_features=served), features)

    holder = ModelHolder(workdir, build, on_swap=lambda v: (metrics.serving(v),
                                                            metrics.reloads.labels("ok").inc()),
                         on_refused=lambda v, e: metrics.reloads.labels("refused").inc())
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=cfg.workers),
                         maximum_concurrent_rpcs=cfg.max_concurrent_rpcs)
    pb_grpc.add_RecommenderServicer_to_server(RecommenderService(holder, metrics), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(f"{cfg.host}:{cfg.port}")
    if port == 0:
        raise AudiorecError(f"cannot listen on {cfg.host}:{cfg.port} (in use or not allowed)")
    if cfg.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(cfg.metrics_port, addr=cfg.host, registry=metrics.registry)
    warm_up(holder.current)
    if cfg.gil_switch_interval_ms is not None:
        sys.setswitchinterval(cfg.gil_switch_interval_ms / 1e3)
    if cfg.tune_gc:
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 1000)
    server.start()
    holder.start(cfg.reload_interval_s)
    for name in ("", SERVICE):  # SERVING only now: the artifact and the store are loaded
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving", extra={"fields": {"address": f"{cfg.host}:{port}",
                                          "version": holder.current.version}})
    return RunningServer(server, port, holder, metrics, health_servicer)


def warm_up(recommender: Recommender, calls: int = 50) -> None:
    """Run the request path before reporting SERVING: the first calls open the store's
    connection, trace the tower's signature and page in the index (tens of ms each)."""
    art = recommender.artifact
    users = list(art.users)[:calls] or ["warm-up"]
    for i in range(calls):
        recommender.recommend(users[i % len(users)], 10, "audiobook" if i % 2 else "podcast")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, message, and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
                           "level": record.levelname, "msg": record.getMessage(),
                           **getattr(record, "fields", {})})


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("audiorec")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False

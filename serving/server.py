"""The gRPC server: ``create_server`` builds, loads and starts it; the handlers live in
serving/service.py.

The thread pool keeps ``health_threads`` beyond the service's capacity, so the health
check answers in milliseconds whatever Recommend is doing. The standard health service
reports SERVING only once an artifact is loaded; reflection is switchable; TLS, client
certificates and a bearer token come from :mod:`serving.security`; the artifact is
hot-reloaded (serving/reload.py); metrics go to a per-server Prometheus registry.
Process-wide settings (the GIL interval, the collector) are the process owner's
(serving/tuning.py), never this library function's.
"""

from __future__ import annotations

import functools
import itertools
import logging
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pydantic import Field

from audiorec.artifact import Manifest, feature_project, read_manifest
from audiorec.config import StrictConfig
from audiorec.errors import (
    AudiorecError,
    ContractError,
)
from audiorec.eventlog import LogConfig
from audiorec.featurestore import FeatureStoreConfig
from serving.accepted import AcceptedLog
from serving.admission import Admission
from serving.arms import CURRENT, Experiment
from serving.artifact import Artifact
from serving.events import EventLimits, Recorder
from serving.features import OnlineFeatures, StoreGuardConfig
from serving.limits import RequestLimits
from serving.live_sync import LiveSync
from serving.metrics import Metrics
from serving.recommender import Recommender
from serving.record_path import RecordPath
from serving.reload import ModelHolder
from serving.security import SecurityConfig, TokenInterceptor, check_exposure, server_credentials
from serving.service import SERVICE, RecommenderService
from serving.user_lock import UserLocks

log = logging.getLogger("audiorec.serving")


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
    # a file the processes of one group lock while each loads a new version (processes.py
    # sets it): they load one after another, so a hot swap never has every core loading
    # beside the calls in flight; None: load at once
    reload_lock: str | None = None
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
    # how often a process takes in titles other processes published (live_sync.py)
    live_sync_interval_s: float = Field(0.5, gt=0, le=60)


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
    live_sync: LiveSync | None = None

    def stop(self, grace: float = 5.0) -> None:
        """Refuse new calls, let in-flight ones finish (up to ``grace`` s), stop watching."""
        self.health.enter_graceful_shutdown()
        for _, holder in self.arms:
            holder.stop()
        if self.live_sync is not None:
            self.live_sync.stop()
        self.server.stop(grace).wait()
        self.metrics.close()
        self.features.close()
        if self.accepted is not None:
            self.accepted.close()


def create_server(workdir: str | Path, cfg: ServerConfig = ServerConfig()) -> RunningServer:
    """Load the current artifact and the feature store, and return a started server."""
    check_exposure(cfg.host, cfg.security)
    metrics = Metrics()
    features = OnlineFeatures(
        workdir,
        cfg.store,
        cfg.store_guard,
        on_state=lambda is_open: metrics.breaker_open.set(int(is_open)),
    )
    accepted = AcceptedLog(workdir, cfg.log, metrics) if cfg.log.enabled else None
    arms = _arms(workdir, cfg, metrics, features, accepted)
    holder = arms[0][1]
    service = RecommenderService(
        arms, cfg.experiment, metrics, Admission(cfg.workers, cfg.max_concurrent_rpcs), accepted
    )
    server, health_servicer, port = _grpc_server(cfg, metrics, service)
    if cfg.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(cfg.metrics_port, addr=cfg.host, registry=metrics.registry)
    with features.warming():
        for _, h in arms:
            warm_up(h.current)
    # titles published before this start (any process) are taken in before the first call
    live_sync = LiveSync(workdir, arms) if accepted is not None else None
    if live_sync is not None:
        live_sync.tick()
    metrics.start()  # the stage timings leave the request path (metrics.py)
    server.start()
    for _, h in arms:
        h.start(cfg.reload_interval_s)
    if live_sync is not None:
        live_sync.start(cfg.live_sync_interval_s)
    for name in ("", SERVICE):  # SERVING only now: the artifact and the store are loaded
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "serving",
        extra={
            "fields": {
                "address": f"{cfg.host}:{port}",
                "version": holder.current.version,
                "arms": {name: h.current.version for name, h in arms if name},
                "tls": cfg.security.tls_cert is not None,
                "token": cfg.security.token is not None,
                "reflection": cfg.security.reflection,
            }
        },
    )
    return RunningServer(
        server, port, holder, arms, metrics, health_servicer, features, accepted, live_sync
    )


def _arms(
    workdir: str | Path,
    cfg: ServerConfig,
    metrics: Metrics,
    features: OnlineFeatures,
    accepted: AcceptedLog | None,
) -> list[tuple[str, ModelHolder]]:
    """One hot-reloading model holder per experiment arm ("" alone without arms)."""
    # a user's real-time read-modify-write, exclusive across this server's processes
    locks = UserLocks(workdir, cfg.store, timeout_s=cfg.store_guard.write_timeout_s)
    records = RecordPath(features, locks)

    def build(directory: Path) -> Recommender:
        manifest = read_manifest(directory, verify_files=False)  # Artifact.load checks all
        project = feature_project(manifest)
        check_lineage(workdir, cfg.store, project, manifest)
        served = features.served_features(project)
        artifact = Artifact.load(
            directory,
            served_user_features=served,
            tower_runtime=cfg.tower_runtime,
            niced_checks=True,  # a reload's hashing leaves the cores to the calls
        )
        recorder = Recorder(
            artifact,
            functools.partial(records.transact, project=project),
            cfg.limits,
            cfg.events,
            dim=_preference_dim(artifact),
            log=None
            if accepted is None
            else functools.partial(accepted.events, version=artifact.version),
        )
        read = features.reader(project)
        records.prepare(project)  # after the reader: it opens the shared Redis reader
        return Recommender(artifact, read, cfg.limits, recorder)

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
            load_lock=cfg.reload_lock,
        )

    return [(a.name, holder_for(a.name, a.version)) for a in cfg.experiment.arms] or [
        ("", holder_for("", CURRENT))
    ]


def _grpc_server(
    cfg: ServerConfig, metrics: Metrics, service: RecommenderService
) -> tuple[grpc.Server, health.HealthServicer, int]:
    """The gRPC server with the service, health and reflection, bound (not started)."""
    sec = cfg.security
    credentials = server_credentials(sec)
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
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=pool),
        interceptors=interceptors,
        # a memory guard only: Recommend sheds itself at max_concurrent_rpcs
        maximum_concurrent_rpcs=4 * pool,
        options=[
            ("grpc.max_receive_message_length", cfg.limits.max_receive_bytes),
            ("grpc.max_metadata_size", 16 * 1024),
            ("grpc.so_reuseport", int(cfg.reuse_port)),
        ],
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
    return server, health_servicer, port


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
    users = list(itertools.islice(art.users, calls)) or ["warm-up"]
    names = art.types.names  # every served type's index gets paged in
    for i in range(calls):
        recommender.recommend(users[i % len(users)], 10, names[i % len(names)])

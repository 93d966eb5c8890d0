"""``audiorec serve --processes N``: N server processes on one port (SO_REUSEPORT).

One Python process answers a Recommend in a few milliseconds of mostly GIL-bound work,
so one process saturates one core. Here the parent starts N children (``spawn``: nothing
of gRPC, TensorFlow or Feast is loaded in the parent, so nothing is forked half-started);
each child builds its own server with :func:`serving.server.create_server` on the same
port with SO_REUSEPORT, loads the artifact and hot-reloads on its own. The kernel spreads
incoming connections over the children (a client with several channels spreads its calls).

The parent supervises: a child that dies is restarted (its port is the same, clients
reconnect); its metrics directory is shared, so ``--metrics-port`` serves the sum of all
children's counters and histograms from the parent (prometheus_client's multiprocess
mode), plus ``audiorec_processes_ready``; each child answers health checks for itself.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import shutil
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from audiorec.errors import AudiorecError

log = logging.getLogger("audiorec.serving")
START_TIMEOUT_S = 600.0  # a 1M-user artifact takes about a minute to load
# prometheus_client's multiprocess directory (it reads the second name, Feast the first)
MP_ENV = ("PROMETHEUS_MULTIPROCESS_DIR", "PROMETHEUS_MULTIPROC_DIR")


def reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    """A socket bound to ``host:port`` (0: a free one) with SO_REUSEPORT, held open so no
    other program takes the port between the children's starts."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise AudiorecError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock, sock.getsockname()[1]


def _child(workdir: str, cfg_json: str, index: int, queue: Any, level: str) -> None:
    """One server process: build, report ready, serve until SIGTERM/SIGINT."""
    from serving.logs import configure_logging
    from serving.server import ServerConfig, create_server
    from serving.tuning import lean_imports

    configure_logging(level)
    lean_imports()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        cfg = ServerConfig.model_validate_json(cfg_json)
        running = create_server(workdir, cfg)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        queue.put(("failed", index, f"{type(exc).__name__}: {exc}"[:500]))
        return
    from serving.tuning import tune_process

    tune_process(cfg)  # this child is the group's: its GIL interval and collector
    queue.put(("ready", index, running.holder.current.version))
    stop.wait()
    running.stop(grace=5.0)


class ProcessGroup:
    """N children serving ``cfg`` on one port; :meth:`stop` ends them."""

    def __init__(self, workdir: str | Path, cfg: Any, processes: int, log_level: str = "INFO"):
        if processes < 1:
            raise AudiorecError(f"--processes is {processes}; expected 1 or more")
        self._sock, self.port = reserve_port(cfg.host, cfg.port)
        self.metrics_port, self.host = cfg.metrics_port, cfg.host
        # children: the reserved port, reuse on, no metrics endpoint of their own
        self._workdir, self._level, self.n = str(Path(workdir).resolve()), log_level, processes
        self._metrics_dir = tempfile.mkdtemp(prefix="audiorec-metrics-")
        # children: the reserved port, reuse on, no metrics endpoint of their own, and one
        # lock file taking turns at loading a new version
        self._cfg_json = cfg.model_copy(
            update={
                "port": self.port,
                "reuse_port": True,
                "metrics_port": None,
                "reload_lock": str(Path(self._metrics_dir) / "reload.lock"),
            }
        ).model_dump_json()
        # inherited by the children
        self._env = {n: os.environ.get(n) for n in MP_ENV}
        os.environ.update({n: self._metrics_dir for n in MP_ENV})
        self._ctx = mp.get_context("spawn")
        self._queue = self._ctx.Queue()
        self._procs: list[Any] = [None] * processes
        self._stopping = threading.Event()
        self.versions: dict[int, str] = {}

    def start(self, timeout_s: float = START_TIMEOUT_S) -> "ProcessGroup":
        for i in range(self.n):
            self._spawn(i)
        deadline = time.monotonic() + timeout_s
        while len(self.versions) < self.n:
            self._wait_one(deadline)
        if self.metrics_port is not None:
            self._serve_metrics()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)
        self._supervisor.start()
        return self

    def _spawn(self, i: int) -> None:
        proc = self._ctx.Process(
            target=_child,
            args=(self._workdir, self._cfg_json, i, self._queue, self._level),
            name=f"audiorec-serve-{i}",
            daemon=False,
        )
        proc.start()
        self._procs[i] = proc

    def _wait_one(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            self.stop()
            raise AudiorecError(
                f"the server processes did not start within {START_TIMEOUT_S:.0f} s"
            )
        try:
            kind, index, what = self._queue.get(timeout=min(left, 1.0))
        except queue.Empty:  # nothing yet: check for a dead child
            dead = [
                i
                for i, p in enumerate(self._procs)
                if p is not None and p.exitcode not in (None, 0)
            ]
            if dead and dead[0] not in self.versions:
                self.stop()
                raise AudiorecError(f"server process {dead[0]} exited while starting") from None
            return
        if kind == "failed":
            self.stop()
            raise AudiorecError(f"server process {index} failed to start: {what}")
        self.versions[index] = what

    def _serve_metrics(self) -> None:
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.core import GaugeMetricFamily
        from prometheus_client.multiprocess import MultiProcessCollector

        group = self

        class Ready:  # the parent's own figure, computed at each scrape
            def collect(self) -> Any:
                yield GaugeMetricFamily(
                    "audiorec_processes_ready",
                    "Server processes alive and started",
                    value=sum(
                        p is not None and p.is_alive() and i in group.versions
                        for i, p in enumerate(group._procs)
                    ),
                )

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self._metrics_dir)  # type: ignore[no-untyped-call]
        registry.register(Ready())
        start_http_server(self.metrics_port, addr=self.host, registry=registry)

    def _supervise(self) -> None:
        """Restart a child that dies (not while stopping)."""
        while not self._stopping.wait(0.5):
            for i, proc in enumerate(self._procs):
                if proc is not None and not proc.is_alive() and not self._stopping.is_set():
                    log.error(
                        "server process died; restarting it",
                        extra={"fields": {"process": i, "exitcode": proc.exitcode}},
                    )
                    self.versions.pop(i, None)
                    self._spawn(i)
            self._drain()

    def _drain(self) -> None:
        while True:
            try:
                kind, index, what = self._queue.get_nowait()
            except queue.Empty:
                return
            if kind == "ready":
                self.versions[index] = what
            else:
                log.error("server process failed to restart", extra={"fields": {"error": what}})

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p is not None]

    def stop(self, grace_s: float = 10.0) -> None:
        self._stopping.set()
        for proc in self._procs:
            if proc is not None and proc.is_alive():
                proc.terminate()  # SIGTERM: the child stops its server gracefully
        deadline = time.monotonic() + grace_s
        for proc in self._procs:
            if proc is not None:
                proc.join(timeout=max(deadline - time.monotonic(), 0.1))
                if proc.is_alive():
                    proc.kill()
        self._sock.close()
        for name, value in self._env.items():  # this process's metrics go where they went
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(self._metrics_dir, ignore_errors=True)

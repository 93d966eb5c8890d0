"""The handlers of the subcommands that serve and talk to a server: ``serve``,
``recommend``, ``event``, ``rollback``. Like app/commands.py, heavy modules are imported
inside the handlers: these never import torch or Keras.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from app.commands import store_overrides
from audiorec.errors import AudiorecError


def cmd_serve(args: argparse.Namespace) -> int:

    from audiorec.config import validated
    from audiorec.eventlog import LogConfig
    from audiorec.featurestore import FeatureStoreConfig
    from serving.arms import Experiment, parse_arms
    from serving.logs import configure_logging
    from serving.security import SecurityConfig
    from serving.server import ServerConfig, create_server
    from serving.tuning import lean_imports, tune_process

    configure_logging(args.log_level)
    lean_imports()  # this process is ours and only serves: Feast without torch
    store = FeatureStoreConfig(**store_overrides(args))
    security = validated(
        SecurityConfig,
        {
            "tls_cert": args.tls_cert,
            "tls_key": args.tls_key,
            "tls_client_ca": args.tls_client_ca,
            "token": _token(args.token_file),
            "reflection": not args.no_reflection,
            "insecure": args.insecure,
        },
    )
    experiment = validated(Experiment, {"arms": parse_arms(args.arm), "salt": args.experiment_salt})
    cfg = ServerConfig(
        host=args.host,
        port=args.port,
        metrics_port=args.metrics_port,
        store=store,
        security=security,
        experiment=experiment,
        tower_runtime=args.tower_runtime,
        log=LogConfig(enabled=not args.no_event_log, exposures=not args.no_exposures),
        **({"workers": args.workers} if args.workers else {}),
    )
    if args.processes > 1:
        return _serve_processes(args, cfg)
    running = create_server(args.workdir, cfg)
    tune_process(cfg)  # this process is ours: its GIL interval and collector
    arms = ", ".join(f"{name} {h.current.version}" for name, h in running.arms if name)
    print(
        f"audiorec: serving {running.holder.current.version} on {args.host}:{running.port}"
        + (f" (arms: {arms})" if arms else "")
        + (" over TLS" if args.tls_cert else "")
        + (", token required" if security.token else "")
        + (f", metrics on :{args.metrics_port}/metrics" if args.metrics_port else "")
        + " (SIGTERM or Ctrl-C stops)",
        flush=True,
    )
    _until_signalled()
    running.stop(grace=5.0)
    print("audiorec: stopped", flush=True)
    return 0


def _serve_processes(args: argparse.Namespace, cfg) -> int:

    from serving.processes import ProcessGroup

    group = ProcessGroup(args.workdir, cfg, args.processes, args.log_level).start()
    versions = sorted(set(group.versions.values()))
    print(
        f"audiorec: serving {', '.join(versions)} on {args.host}:{group.port} in "
        f"{args.processes} processes"
        + (f", metrics on :{args.metrics_port}/metrics" if args.metrics_port else "")
        + " (SIGTERM or Ctrl-C stops)",
        flush=True,
    )
    _until_signalled()
    group.stop()
    print("audiorec: stopped", flush=True)
    return 0


def _token(token_file: str | None, variable: str = "AUDIOREC_TOKEN") -> str | None:
    """The bearer token: from the token file, else the environment ``variable`` (never a
    command-line value: arguments are visible to every user of the machine in `ps`)."""
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise AudiorecError(
                f"cannot read the token file {token_file}: {exc.strerror}"
            ) from None
        if not token:
            raise AudiorecError(f"the token file {token_file} is empty")
        return token
    return os.environ.get(variable) or None


def _connection(args: argparse.Namespace):
    """The server a client command talks to (cli.client_options)."""
    from serving.client import Connection

    return Connection(
        args.target,
        token=_token(args.token_file),
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )


def cmd_recommend(args: argparse.Namespace) -> int:
    from serving.client import format_answer, recommend, similar

    conn = _connection(args)
    if args.similar:
        response = similar(conn, args.id, args.k, args.type, args.timeout)
    else:
        response = recommend(
            conn,
            args.id,
            args.k,
            args.type or "audiobook",
            args.timeout,
            languages=args.languages.split(",") if args.languages else (),
            include_consumed=args.include_consumed,
            explain=args.explain,
            arm=args.arm,
        )
    print(format_answer(args.id, response))
    return 0


def cmd_event(args: argparse.Namespace) -> int:
    from serving.client import record_event

    conn = _connection(args)
    response = record_event(
        conn,
        args.user_id,
        args.item_id,
        args.type,
        args.timestamp_ms,
        args.event_id or "",
        args.timeout,
    )
    what = (
        "recorded"
        if response.recorded
        else "already recorded (a replay)"
        if response.duplicates
        else "older than the model's cut (the daily batch has it)"
    )
    print(
        f"{args.type} of {args.item_id} by {args.user_id}: {what} (model {response.model_version})"
    )
    return 0


def cmd_item(args: argparse.Namespace) -> int:
    from serving.client import record_item

    response = record_item(
        _connection(args),
        args.item_id,
        args.type,
        args.title,
        args.description,
        args.language,
        args.genre,
        args.timeout,
    )
    what = "published: recommendable now" if response.created else "already an item"
    print(f"{args.type} {args.item_id}: {what} (model {response.model_version})")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from audiorec.artifact import list_versions, rollback

    if args.list:
        from audiorec.artifact import current_version

        current = current_version(args.workdir)
        for v in list_versions(args.workdir):
            print(f"{'*' if v == current else ' '} {v}")
        return 0
    previous, now = rollback(args.workdir, args.version)
    print(
        f"audiorec: current is now {now} (was {previous or 'none'}); a running server "
        "swaps to it within its reload interval"
    )
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    import time

    from audiorec.artifact import current_dir, feature_project, read_manifest
    from audiorec.config import validated
    from audiorec.featurestore import FeatureStoreConfig
    from inspector.pages import Inspector
    from inspector.server import InspectorConfig, check_exposure, create_server
    from inspector.workdir import Workdir
    from serving.features import OnlineFeatures, StoreGuardConfig
    from serving.logs import configure_logging

    configure_logging(args.log_level)
    cfg = validated(
        InspectorConfig,
        {
            "host": args.host,
            "port": args.port,
            "token": _token(args.ui_token_file, "AUDIOREC_UI_TOKEN"),
            "tls_cert": args.ui_tls_cert,
            "tls_key": args.ui_tls_key,
            "insecure": args.insecure,
        },
    )
    check_exposure(cfg)  # before seconds of opening the store
    guard = StoreGuardConfig(read_timeout_s=2.0, readers=2, write_timeout_s=2.0)
    features = OnlineFeatures(args.workdir, FeatureStoreConfig(**store_overrides(args)), guard)
    # open the store now (Feast's imports and registry: seconds), not on the first page
    features.reader(feature_project(read_manifest(current_dir(args.workdir), verify_files=False)))

    def read(user_id: str, project: str) -> dict:
        return features(user_id, time.monotonic() + guard.read_timeout_s, project)

    inspector = Inspector(
        _connection(args), Workdir(args.workdir, args.report), read, timeout_s=args.timeout
    )
    running = create_server(inspector, cfg)
    print(
        f"audiorec: inspector on {running.url} for the server at {args.target}"
        + (" (open it once with ?token=...)" if cfg.token else "")
        + " (SIGTERM or Ctrl-C stops)",
        flush=True,
    )
    _until_signalled()
    running.stop()
    features.close()
    print("audiorec: inspector stopped", flush=True)
    return 0


def _until_signalled() -> None:
    """Block until SIGTERM or SIGINT (Ctrl-C) arrives."""
    import signal
    import threading

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()

"""The handlers of the ``audiorec`` subcommands: parse, call the library, print.

Heavy modules are imported inside the handlers, so ``audiorec --help`` is instant and
serving commands never import torch.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from audiorec.errors import AudiorecError


def cmd_generate(args: argparse.Namespace) -> int:
    from audiorec.config import load_overrides
    from training.synth import WorldConfig, generate_world
    from training.synth.stats import format_stats

    cfg = WorldConfig.for_scale(args.scale, **load_overrides(args.config))
    stats = generate_world(
        cfg, args.seed, args.out, overwrite=args.overwrite, progress=not args.quiet
    )
    print(format_stats(stats, Path(args.out)))
    if args.check_facts and not stats["all_hold"]:
        failed = ", ".join(k for k, f in stats["facts"].items() if not f["holds"])
        raise AudiorecError(
            f"facts {failed} do not hold in this world (see {args.out}/stats.json);"
            " pass --no-check-facts to keep it anyway"
        )
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from training.data import Dataset

    info = Dataset.open(args.data).info
    rows = ", ".join(f"{k} {v:,}" for k, v in info.rows.items())
    print(
        f"{args.data}: matches the data contract ({rows}; music_dim {info.music_dim}; "
        f"events {info.first_event} .. {info.last_event})"
    )
    return 0


def cmd_embed_text(args: argparse.Namespace) -> int:
    from training.text.embed import embed_items

    res = embed_items(
        Path(args.data) / "items.parquet",
        args.out,
        model_name=args.model,
        cache=args.cache,
        progress=not args.quiet,
    )
    print(
        f"text embeddings of {res['items']:,} items ({res['encoded']:,} encoded, "
        f"{res['cached']:,} from cache; dim {res['dim']}) -> {args.out}"
    )
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from datetime import date

    from audiorec.featurestore import FeatureStoreConfig
    from training.features.refresh import refresh_features

    through = date.fromisoformat(args.through) if args.through else None
    report = refresh_features(
        args.data,
        args.workdir,
        args.hgnn,
        args.text,
        through=through,
        store=FeatureStoreConfig(**store_overrides(args)),
        progress=True,
    )
    print(report.summary())
    return 0


def cmd_hgnn(args: argparse.Namespace) -> int:
    from datetime import date

    from audiorec.config import load_overrides, validated
    from training.data import Dataset
    from training.features.windows import midnight
    from training.graph.colisten import GraphConfig
    from training.hgnn.config import HGNNConfig
    from training.hgnn.run import run_hgnn

    cfg = validated(HGNNConfig, load_overrides(args.config))
    graph = validated(
        GraphConfig, {"relations": tuple(args.relations.split(",")) if args.relations else None}
    )
    if args.no_balanced:
        cfg = cfg.with_overrides({"balanced": False})
    cut = (
        midnight(date.fromisoformat(args.cut)) if args.cut else Dataset.open(args.data).default_cut
    )
    run = run_hgnn(args.data, args.text, args.out, cut, graph, cfg, progress=not args.quiet)
    print(run.summary())
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from datetime import date

    from audiorec.config import load_overrides, merge, validated
    from training.features.windows import midnight
    from training.pipeline import PipelineConfig, run_pipeline

    overrides = load_overrides(args.config)
    if args.online or args.redis or args.redis_cluster:
        overrides = merge(overrides, {"store": store_overrides(args)})
    if args.preset:
        overrides = merge(overrides, {"preset": args.preset})
    overrides = merge(overrides, _engine_overrides(args))
    cfg = validated(PipelineConfig, overrides)
    cut = midnight(date.fromisoformat(args.cut)) if args.cut else None
    report = run_pipeline(
        args.data, args.workdir, cfg, cut=cut, skip_hgnn=args.skip_hgnn, progress=not args.quiet
    )
    steps = ", ".join(f"{k} {v:.0f}s" for k, v in report.seconds.items())
    print(f"\npipeline done: version {report.version} published at {report.directory}\n  ({steps})")
    return 0


def store_overrides(args: argparse.Namespace) -> dict:
    """--online / --redis / --redis-cluster as FeatureStoreConfig fields; a Redis flag
    without --online redis would do nothing, so it is an error."""
    if (args.redis or args.redis_cluster) and args.online != "redis":
        flag = "--redis-cluster" if args.redis_cluster else "--redis"
        raise AudiorecError(f"{flag} needs --online redis (the online store is SQLite otherwise)")
    return {
        "online": args.online or "sqlite",
        "redis_cluster": bool(args.redis_cluster),
        **({"redis": args.redis} if args.redis else {}),
    }


def _engine_overrides(args: argparse.Namespace) -> dict:
    """--engine / --ray-address as PipelineConfig overrides (an address implies ray)."""
    engine: dict = {}
    if getattr(args, "engine", None):
        engine["kind"] = args.engine
    if getattr(args, "ray_address", None):
        if args.engine == "local":
            raise AudiorecError("--ray-address needs --engine ray")
        engine.update(kind="ray", address=args.ray_address)
    return {"engine": engine} if engine else {}


def cmd_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from audiorec.config import validated
    from audiorec.featurestore import FeatureStoreConfig
    from serving.arms import Experiment, parse_arms
    from serving.security import SecurityConfig
    from serving.server import ServerConfig, configure_logging, create_server
    from serving.tuning import tune_process

    configure_logging(args.log_level)
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
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    running.stop(grace=5.0)
    print("audiorec: stopped", flush=True)
    return 0


def _serve_processes(args: argparse.Namespace, cfg) -> int:
    import signal
    import threading

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
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    group.stop()
    print("audiorec: stopped", flush=True)
    return 0


def _token(token_file: str | None) -> str | None:
    """The bearer token: from --token-file, else $AUDIOREC_TOKEN (never a command-line
    value: arguments are visible to every user of the machine in `ps`)."""
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
    return os.environ.get("AUDIOREC_TOKEN") or None


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


def cmd_evaluate(
    args: argparse.Namespace, base: dict | None = None, data=None, workdir=None, out=None
) -> int:
    from audiorec.config import load_overrides, merge, validated
    from training.evaluation.report import write_report
    from training.evaluation.run import EvaluationConfig, run_evaluation

    overrides = merge(base or {}, load_overrides(args.config))
    if args.no_ablations:
        overrides["ablations"] = False
    if args.seeds:
        overrides["seeds"] = tuple(int(s) for s in args.seeds.split(","))
    overrides = merge(overrides, {"pipeline": _engine_overrides(args)})
    cfg = validated(EvaluationConfig, overrides)
    res = run_evaluation(data or args.data, workdir or args.workdir, cfg, progress=not args.quiet)
    import sys

    command = recorded_command(sys.argv[1:])
    report = write_report(res, out or args.out, command=command)
    print(f"report: {report} (metrics.json, hr_at_k.png, coverage_vs_hr.png beside it)")
    return 0


def recorded_command(argv: list[str]) -> str:
    """The command as a report records it: absolute paths as their last part (a record
    of this machine's folders would point a reader outside the repository)."""
    import shlex

    return "audiorec " + " ".join(
        shlex.quote(Path(a).name if os.path.isabs(a) else a) for a in argv
    )


def _ciao_config(args: argparse.Namespace):
    from audiorec.config import load_overrides, validated
    from training.data.ciao import CiaoConfig

    over = load_overrides(getattr(args, "import_config", None))
    for key in ("sparse_category", "dense_category", "min_item_ratings", "min_user_ratings"):
        if getattr(args, key) is not None:
            over[key] = getattr(args, key)
    return validated(CiaoConfig, over)


def cmd_import_ciao(args: argparse.Namespace) -> int:
    from training.data.ciao import import_ciao

    report = import_ciao(args.src, args.out, _ciao_config(args))
    b, a = report["before"], report["after"]
    print(
        f"Ciao {report['config']['sparse_category']} (audiobook role) + "
        f"{report['config']['dense_category']} (podcast role): {b['ratings']:,} ratings, "
        f"{b['users']:,} users, {b['sparse_items']:,} + {b['dense_items']:,} items -> "
        f"{a['ratings']:,} ratings, {a['users']:,} users, {a['sparse_items']:,} + "
        f"{a['dense_items']:,} items after the k-core ({report['k_core_rounds']} rounds); "
        f"events {report['events']}"
    )
    print(f"written to {args.out} (import_report.json beside the tables)")
    return 0


def cmd_ciao(args: argparse.Namespace) -> int:
    """Import Ciao and evaluate every model on it, with the Ciao evaluation preset."""
    import json

    from training.data.ciao import EVALUATION_PRESET

    wd = Path(args.workdir)
    args.out = str(wd / "data")
    cmd_import_ciao(args)
    wd.mkdir(parents=True, exist_ok=True)
    # evaluated at the cut the import filtered at: who is in was decided before it
    cut = json.loads((wd / "data" / "import_report.json").read_text())["cut"]
    base = {**EVALUATION_PRESET, **({"holdout_from": cut} if cut else {})}
    (wd / "evaluation.json").write_text(json.dumps(base, indent=2))
    return cmd_evaluate(args, base=base, data=wd / "data", workdir=wd / "eval", out=wd / "report")


def cmd_demo(args: argparse.Namespace) -> int:
    from app.demo import run_demo

    return run_demo(args.workdir, args.scale, args.seed, evaluate=not args.no_evaluate)

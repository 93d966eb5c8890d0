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


def cmd_evaluate(
    args: argparse.Namespace, base: dict | None = None, data=None, workdir=None, out=None
) -> int:
    from audiorec.config import load_overrides, merge, validated
    from training.evaluation.config import EvaluationConfig
    from training.evaluation.report import write_report
    from training.evaluation.run import run_evaluation

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


def cmd_experiment(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from training.evaluation.experiment import read_experiment, readout_dir, write_readout

    since = None
    if args.since:
        try:
            since = datetime.fromisoformat(args.since)
        except ValueError:
            raise AudiorecError(
                f"--since {args.since[:40]!r}: expected YYYY-MM-DD[THH:MM]"
            ) from None
        since = since if since.tzinfo else since.replace(tzinfo=timezone.utc)
    if not args.window_hours > 0:
        raise AudiorecError("--window-hours must be positive")
    readout = read_experiment(args.workdir, args.salt, since, args.window_hours)
    print(readout.text())
    chart = write_readout(readout, args.out or readout_dir(args.workdir, readout.salt))
    print(f"readout: {chart.parent / 'readout.json'}, chart: {chart}")
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

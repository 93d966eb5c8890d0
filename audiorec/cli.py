"""The ``audiorec`` command line: one entry point, one subcommand per job.

Handlers stay thin: parse, call the library, print. Heavy modules are imported inside
the handlers, so ``audiorec --help`` is instant and serving commands never import torch.
A user-facing failure (:class:`AudiorecError`) prints one line and exits 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from audiorec import __version__
from audiorec.errors import AudiorecError
from audiorec.secrets import redact


def _cmd_generate(args: argparse.Namespace) -> int:
    from audiorec.config import load_overrides
    from training.synth import WorldConfig, generate_world
    from training.synth.stats import format_stats

    cfg = WorldConfig.for_scale(args.scale, **load_overrides(args.config))
    stats = generate_world(cfg, args.seed, args.out, overwrite=args.overwrite,
                           progress=not args.quiet)
    print(format_stats(stats, Path(args.out)))
    if args.check_facts and not stats["all_hold"]:
        failed = ", ".join(k for k, f in stats["facts"].items() if not f["holds"])
        raise AudiorecError(f"facts {failed} do not hold in this world (see {args.out}/stats.json);"
                            " pass --no-check-facts to keep it anyway")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from training.data import validate_dataset

    info = validate_dataset(args.data)
    rows = ", ".join(f"{k} {v:,}" for k, v in info.rows.items())
    print(f"{args.data}: matches the data contract ({rows}; music_dim {info.music_dim}; "
          f"events {info.first_event} .. {info.last_event})")
    return 0


def _cmd_embed_text(args: argparse.Namespace) -> int:
    from training.text.embed import embed_items

    res = embed_items(Path(args.data) / "items.parquet", args.out, model_name=args.model,
                      cache=args.cache, progress=not args.quiet)
    print(f"text embeddings of {res['items']:,} items ({res['encoded']:,} encoded, "
          f"{res['cached']:,} from cache; dim {res['dim']}) -> {args.out}")
    return 0


def _cmd_features(args: argparse.Namespace) -> int:
    from datetime import date

    from training.features.config import FeatureStoreConfig
    from training.features.refresh import refresh_features

    through = date.fromisoformat(args.through) if args.through else None
    report = refresh_features(args.data, args.workdir, args.hgnn, args.text, through=through,
                              store=FeatureStoreConfig(online=args.online, redis=args.redis),
                              progress=True)
    print(report.summary())
    return 0


def _cmd_hgnn(args: argparse.Namespace) -> int:
    from datetime import date

    from audiorec.config import load_overrides, validated
    from training.graph.colisten import GraphConfig
    from training.hgnn.config import HGNNConfig
    from training.hgnn.run import run_hgnn
    from training.data.span import default_cut
    from training.features.windows import midnight

    cfg = validated(HGNNConfig, load_overrides(args.config))
    graph = validated(GraphConfig, {"relations": tuple(args.relations.split(","))})
    if args.no_balanced:
        cfg = cfg.with_overrides({"balanced": False})
    cut = midnight(date.fromisoformat(args.cut)) if args.cut else default_cut(args.data)
    run = run_hgnn(args.data, args.text, args.out, cut, graph, cfg, progress=not args.quiet)
    print(run.summary())
    return 0


def _cmd_pipeline(args: argparse.Namespace) -> int:
    from datetime import date

    from audiorec.config import load_overrides, validated
    from training.features.windows import midnight
    from training.pipeline import PipelineConfig, run_pipeline

    overrides = load_overrides(args.config)
    if args.online:
        overrides["store"] = {**overrides.get("store", {}), "online": args.online,
                              **({"redis": args.redis} if args.redis else {})}
    cfg = validated(PipelineConfig, overrides)
    cut = midnight(date.fromisoformat(args.cut)) if args.cut else None
    report = run_pipeline(args.data, args.workdir, cfg, cut=cut, skip_hgnn=args.skip_hgnn,
                          progress=not args.quiet)
    steps = ", ".join(f"{k} {v:.0f}s" for k, v in report.seconds.items())
    print(f"\npipeline done: version {report.version} published at {report.directory}\n"
          f"  ({steps})")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from training.features.config import FeatureStoreConfig
    from serving.server import ServerConfig, configure_logging, create_server

    from audiorec.config import validated
    from serving.security import SecurityConfig

    configure_logging(args.log_level)
    store = FeatureStoreConfig(online=args.online, **({"redis": args.redis} if args.redis else {}))
    security = validated(SecurityConfig, {
        "tls_cert": args.tls_cert, "tls_key": args.tls_key, "tls_client_ca": args.tls_client_ca,
        "token": _token(args.token_file), "reflection": not args.no_reflection,
        "insecure": args.insecure})
    cfg = ServerConfig(host=args.host, port=args.port, metrics_port=args.metrics_port,
                       store=store, security=security,
                       **({"workers": args.workers} if args.workers else {}))
    running = create_server(args.workdir, cfg)
    print(f"audiorec: serving {running.holder.current.version} on {args.host}:{running.port}"
          + (" over TLS" if args.tls_cert else "") + (", token required" if
                                                      security.token else "")
          + (f", metrics on :{args.metrics_port}/metrics" if args.metrics_port else "")
          + " (SIGTERM or Ctrl-C stops)", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    running.stop(grace=5.0)
    print("audiorec: stopped", flush=True)
    return 0


def _token(token_file: str | None) -> str | None:
    """The bearer token: from --token-file, else $AUDIOREC_TOKEN (never a command-line
    value: arguments are visible to every user of the machine in `ps`)."""
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise AudiorecError(f"cannot read the token file {token_file}: {exc.strerror}") \
                from None
        if not token:
            raise AudiorecError(f"the token file {token_file} is empty")
        return token
    return os.environ.get("AUDIOREC_TOKEN") or None


def _cmd_recommend(args: argparse.Namespace) -> int:
    from serving.client import Connection, format_answer, recommend, similar

    conn = Connection(args.target, token=_token(args.token_file), tls_ca=args.tls_ca,
                      tls_cert=args.tls_cert, tls_key=args.tls_key)
    if args.similar:
        response = similar(conn, args.id, args.k, args.type, args.timeout)
    else:
        response = recommend(conn, args.id, args.k, args.type, args.timeout,
                             languages=args.languages.split(",") if args.languages else (),
                             include_consumed=args.include_consumed)
    print(format_answer(args.id, response))
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    from audiorec.artifact import list_versions, rollback

    if args.list:
        from audiorec.artifact import current_version

        current = current_version(args.workdir)
        for v in list_versions(args.workdir):
            print(f"{'*' if v == current else ' '} {v}")
        return 0
    previous, now = rollback(args.workdir, args.version)
    print(f"audiorec: current is now {now} (was {previous or 'none'}); a running server "
          "swaps to it within its reload interval")
    return 0


def _cmd_evaluate(args: argparse.Namespace, base: dict | None = None, data=None,
                  workdir=None, out=None) -> int:
    from audiorec.config import load_overrides, validated
    from training.evaluation.report import write_report
    from training.evaluation.run import EvaluationConfig, run_evaluation

    overrides = _merge(base or {}, load_overrides(args.config))
    if args.no_ablations:
        overrides["ablations"] = False
    if args.seeds:
        overrides["seeds"] = tuple(int(s) for s in args.seeds.split(","))
    cfg = validated(EvaluationConfig, overrides)
    res = run_evaluation(data or args.data, workdir or args.workdir, cfg,
                         progress=not args.quiet)
    report = write_report(res, out or args.out)
    print(f"report: {report} (metrics.json, hr_at_k.png, coverage_vs_hr.png beside it)")
    return 0


def _merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``, section by section (nested dicts merge)."""
    merged = dict(base)
    for k, v in over.items():
        merged[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(
            base.get(k), dict) else v
    return merged


def _ciao_config(args: argparse.Namespace):
    from audiorec.config import load_overrides, validated
    from training.data.ciao import CiaoConfig

    over = load_overrides(getattr(args, "import_config", None))
    for key in ("sparse_category", "dense_category", "min_item_ratings", "min_user_ratings"):
        if getattr(args, key) is not None:
            over[key] = getattr(args, key)
    return validated(CiaoConfig, over)


def _cmd_import_ciao(args: argparse.Namespace) -> int:
    from training.data.ciao import import_ciao

    report = import_ciao(args.src, args.out, _ciao_config(args))
    b, a = report["before"], report["after"]
    print(f"Ciao {report['config']['sparse_category']} (audiobook role) + "
          f"{report['config']['dense_category']} (podcast role): {b['ratings']:,} ratings, "
          f"{b['users']:,} users, {b['sparse_items']:,} + {b['dense_items']:,} items -> "
          f"{a['ratings']:,} ratings, {a['users']:,} users, {a['sparse_items']:,} + "
          f"{a['dense_items']:,} items after the k-core ({report['k_core_rounds']} rounds); "
          f"events {report['events']}")
    print(f"written to {args.out} (import_report.json beside the tables)")
    return 0


def _cmd_ciao(args: argparse.Namespace) -> int:
    """Import Ciao and evaluate every model on it, with the Ciao evaluation preset."""
    import json

    from training.data.ciao import EVALUATION_PRESET

    wd = Path(args.workdir)
    args.out = str(wd / "data")
    _cmd_import_ciao(args)
    wd.mkdir(parents=True, exist_ok=True)
    (wd / "evaluation.json").write_text(json.dumps(EVALUATION_PRESET, indent=2))
    return _cmd_evaluate(args, base=EVALUATION_PRESET, data=wd / "data",
                         workdir=wd / "eval", out=wd / "report")


def _cmd_demo(args: argparse.Namespace) -> int:
    from audiorec.demo import run_demo

    return run_demo(args.workdir, args.scale, args.seed, evaluate=not args.no_evaluate)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="audiorec", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"audiorec {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser("generate", help="generate a synthetic streaming world (data contract)")
    g.add_argument("--scale", choices=("tiny", "demo", "large"), default="demo")
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--out", required=True, help="output directory (written atomically)")
    g.add_argument("--config", help="JSON file of WorldConfig overrides (unknown keys rejected)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    g.add_argument("--no-check-facts", dest="check_facts", action="store_false",
                   help="exit 0 even if a paper fact does not hold")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.set_defaults(func=_cmd_generate)

    v = sub.add_parser("validate", help="check a dataset directory against the data contract")
    v.add_argument("data")
    v.set_defaults(func=_cmd_validate)

    t = sub.add_parser("embed-text", help="sentence embeddings of item titles + descriptions")
    t.add_argument("--data", required=True, help="dataset directory (data contract)")
    t.add_argument("--out", required=True, help="item-embedding table to write (parquet)")
    t.add_argument("--model", help="local sentence-transformers checkpoint (default: packaged "
                                   "all-MiniLM-L6-v2)")
    t.add_argument("--cache", help="embedding cache (parquet), keyed by content hash")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=_cmd_embed_text)

    f = sub.add_parser("features", help="feature jobs, feast apply and materialize")
    f.add_argument("--data", required=True, help="dataset directory (data contract)")
    f.add_argument("--workdir", required=True, help="pipeline work directory")
    f.add_argument("--hgnn", required=True, help="item-embedding table of the HGNN")
    f.add_argument("--text", required=True, help="item-embedding table of the text model")
    f.add_argument("--through", help="last snapshot date, YYYY-MM-DD (default: day after the "
                                     "last event)")
    f.add_argument("--online", choices=("sqlite", "redis"), default="sqlite")
    f.add_argument("--redis", default="localhost:6379", help="Redis connection string")
    f.set_defaults(func=_cmd_features)

    h = sub.add_parser("hgnn", help="co-listening graph + HGNN training + item embeddings")
    h.add_argument("--data", required=True, help="dataset directory (data contract)")
    h.add_argument("--text", required=True, help="item-embedding table of the text model")
    h.add_argument("--out", required=True, help="output directory (published atomically)")
    h.add_argument("--cut", help="training cut, YYYY-MM-DD (default: day after the last event)")
    h.add_argument("--relations", default="AA,AP,PP",
                   help="graph relations to keep (ablations: AA,AP / AP,PP / AA / PP)")
    h.add_argument("--no-balanced", action="store_true", help="ablation: plain edge sampling")
    h.add_argument("--config", help="JSON file of HGNNConfig overrides")
    h.add_argument("--quiet", action="store_true")
    h.set_defaults(func=_cmd_hgnn)

    pl = sub.add_parser("pipeline", help="the daily pipeline: dataset -> published artifact")
    pl.add_argument("--data", required=True, help="dataset directory (data contract)")
    pl.add_argument("--workdir", required=True, help="work directory (features, models, "
                                                     "artifacts/)")
    pl.add_argument("--cut", help="train on events before this day, YYYY-MM-DD (default: the "
                                  "day after the last event)")
    pl.add_argument("--skip-hgnn", action="store_true",
                    help="reuse the last HGNN item embeddings (HGNN weekly, 2T daily)")
    pl.add_argument("--config", help="JSON file of PipelineConfig overrides: sections graph, "
                                     "hgnn, features, store, two_tower, index")
    pl.add_argument("--online", choices=("sqlite", "redis"), help="online store (default: "
                                                                  "sqlite)")
    pl.add_argument("--redis", help="Redis connection string, host:port")
    pl.add_argument("--quiet", action="store_true")
    pl.set_defaults(func=_cmd_pipeline)

    ev = sub.add_parser("evaluate", help="every model on the hold-out, the paper's tables")
    ev.add_argument("--data", required=True, help="dataset directory (data contract)")
    ev.add_argument("--workdir", required=True, help="where the evaluation trains its models")
    ev.add_argument("--out", required=True, help="report directory")
    ev.add_argument("--seeds", help="two-tower seeds of the main rows, e.g. 0,1,2")
    ev.add_argument("--no-ablations", action="store_true", help="main rows only")
    ev.add_argument("--config", help="JSON file of EvaluationConfig overrides (holdout_days, "
                                     "seeds, ablations, popularity_days, pipeline)")
    ev.add_argument("--quiet", action="store_true")
    ev.set_defaults(func=_cmd_evaluate)

    def ciao_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--src", default="../shared/data/ciao-tang",
                            help="the Ciao folder (ratings.csv.gz, trust.csv.gz, catalog_ciao.txt)")
        parser.add_argument("--sparse", dest="sparse_category",
                            help="category in the audiobook role (default Books)")
        parser.add_argument("--dense", dest="dense_category",
                            help="category in the podcast role (default DVDs)")
        parser.add_argument("--min-item-ratings", type=int, help="k-core: ratings per item (3)")
        parser.add_argument("--min-user-ratings", type=int, help="k-core: ratings per user (3)")
        parser.add_argument("--import-config", help="JSON file of CiaoConfig overrides")

    im = sub.add_parser("import", help="convert a public dataset into the data contract")
    im_sub = im.add_subparsers(dest="source", required=True, metavar="SOURCE")
    ic = im_sub.add_parser("ciao", help="Ciao (Tang et al.): ratings + trust network")
    ciao_options(ic)
    ic.add_argument("--out", required=True, help="dataset directory to write (atomically)")
    ic.set_defaults(func=_cmd_import_ciao)

    ca = sub.add_parser("ciao", help="import Ciao and evaluate every model on it (one command)")
    ciao_options(ca)
    ca.add_argument("--workdir", default="runs/ciao",
                    help="gets data/, eval/, report/ and evaluation.json")
    ca.add_argument("--seeds", help="two-tower seeds of the main rows, e.g. 0,1,2")
    ca.add_argument("--no-ablations", action="store_true", help="main rows only")
    ca.add_argument("--config", help="JSON file of EvaluationConfig overrides on top of the "
                                     "Ciao preset")
    ca.add_argument("--quiet", action="store_true")
    ca.set_defaults(func=_cmd_ciao)

    sv = sub.add_parser("serve", help="the gRPC recommender on the current artifact version")
    sv.add_argument("--workdir", required=True, help="work directory with artifacts/current")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=50051, help="0: any free port")
    sv.add_argument("--online", choices=("sqlite", "redis"), default="sqlite")
    sv.add_argument("--redis", help="Redis connection string, host:port")
    sv.add_argument("--metrics-port", type=int, help="serve Prometheus metrics over HTTP")
    sv.add_argument("--workers", type=int, help="request threads (default 4)")
    sv.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING"))
    sv.add_argument("--tls-cert", help="server certificate chain (PEM): serve over TLS")
    sv.add_argument("--tls-key", help="the certificate's private key (PEM)")
    sv.add_argument("--tls-client-ca", help="CA (PEM) that client certificates must be "
                    "signed by (mutual TLS)")
    sv.add_argument("--token-file", help="file holding the bearer token every call must "
                    "carry (default: $AUDIOREC_TOKEN; none: no token)")
    sv.add_argument("--no-reflection", action="store_true", help="turn server reflection off")
    sv.add_argument("--insecure", action="store_true", help="allow a non-loopback --host "
                    "without TLS and a token")
    sv.set_defaults(func=_cmd_serve)

    rc = sub.add_parser("recommend", help="ask a running server (prints a table)")
    rc.add_argument("id", metavar="USER_ID", help="user id (item id with --similar)")
    rc.add_argument("--k", type=int, default=10)
    rc.add_argument("--type", choices=("audiobook", "podcast"), default="audiobook")
    rc.add_argument("--languages", help="comma-separated language filter, e.g. de,en")
    rc.add_argument("--include-consumed", action="store_true")
    rc.add_argument("--similar", action="store_true", help="items similar to the item id")
    rc.add_argument("--target", default="127.0.0.1:50051", help="server host:port")
    rc.add_argument("--timeout", type=float, default=5.0, help="deadline in seconds")
    rc.add_argument("--token-file", help="bearer token file (default: $AUDIOREC_TOKEN)")
    rc.add_argument("--tls-ca", help="CA (PEM) to verify a TLS server with")
    rc.add_argument("--tls-cert", help="client certificate (PEM), for mutual TLS")
    rc.add_argument("--tls-key", help="client key (PEM), for mutual TLS")

    rb = sub.add_parser("rollback", help="point artifacts/current at an older version")
    rb.add_argument("version", nargs="?", help="version name (default: the newest intact "
                    "version older than current)")
    rb.add_argument("--workdir", required=True, help="work directory with artifacts/")
    rb.add_argument("--list", action="store_true", help="list the versions (* = current)")
    rb.set_defaults(func=_cmd_rollback)
    rc.set_defaults(func=_cmd_recommend)

    d = sub.add_parser("demo", help="the README's main job, end to end on the defaults")
    d.add_argument("--workdir", default="runs/demo")
    d.add_argument("--scale", choices=("tiny", "demo", "large"), default="demo")
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--no-evaluate", action="store_true", help="skip the offline evaluation")
    d.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up banner
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AudiorecError as exc:
        print(f"audiorec: error: {redact(' '.join(str(exc).split()))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("audiorec: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """Console-script entry point: exit without interpreter teardown, where DuckDB 2.0's
    bindings print dozens of harmless "nanobind: leaked ..." lines (STACK.md trap 6).
    Every file is closed by then; only the output streams need flushing."""
    rc = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


if __name__ == "__main__":
    run()

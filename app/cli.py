"""The ``audiorec`` command line: one entry point, one subcommand per job.

This module is the parser and the error boundary; the handlers (``app/commands.py``,
``app/serve_commands.py``) stay thin: parse, call the library, print. A user-facing
failure (:class:`AudiorecError`) prints one line and exits 1.
"""

from __future__ import annotations

import argparse
import os
import sys

from app import commands, serve_commands
from app.options import client_options, engine_options, store_options
from audiorec import __version__
from audiorec.errors import AudiorecError
from audiorec.secrets import redact
from audiorec.vocabulary import EVENT_TYPES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="audiorec", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"audiorec {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _data_commands(sub)
    _training_commands(sub)
    _import_commands(sub)
    _serve_command(sub)
    _client_commands(sub)
    return p


def _data_commands(sub) -> None:
    """Making and checking the data: generate, validate, embed-text, features, hgnn."""
    g = sub.add_parser("generate", help="generate a synthetic streaming world (data contract)")
    g.add_argument("--scale", choices=("tiny", "demo", "large"), default="demo")
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--out", required=True, help="output directory (written atomically)")
    g.add_argument("--config", help="JSON file of WorldConfig overrides (unknown keys rejected)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    g.add_argument(
        "--no-check-facts",
        dest="check_facts",
        action="store_false",
        help="exit 0 even if a paper fact does not hold",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.set_defaults(func=commands.cmd_generate)

    v = sub.add_parser("validate", help="check a dataset directory against the data contract")
    v.add_argument("data")
    v.set_defaults(func=commands.cmd_validate)

    t = sub.add_parser("embed-text", help="sentence embeddings of item titles + descriptions")
    t.add_argument("--data", required=True, help="dataset directory (data contract)")
    t.add_argument("--out", required=True, help="item-embedding table to write (parquet)")
    t.add_argument(
        "--model",
        help="local sentence-transformers checkpoint (default: packaged all-MiniLM-L6-v2)",
    )
    t.add_argument("--cache", help="embedding cache (parquet), keyed by content hash")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=commands.cmd_embed_text)

    f = sub.add_parser("features", help="feature jobs, feast apply and materialize")
    f.add_argument("--data", required=True, help="dataset directory (data contract)")
    f.add_argument("--workdir", required=True, help="pipeline work directory")
    f.add_argument("--hgnn", required=True, help="item-embedding table of the HGNN")
    f.add_argument("--text", required=True, help="item-embedding table of the text model")
    f.add_argument(
        "--through", help="last snapshot date, YYYY-MM-DD (default: day after the last event)"
    )
    store_options(f)
    f.set_defaults(func=commands.cmd_features)

    h = sub.add_parser("hgnn", help="co-listening graph + HGNN training + item embeddings")
    h.add_argument("--data", required=True, help="dataset directory (data contract)")
    h.add_argument("--text", required=True, help="item-embedding table of the text model")
    h.add_argument("--out", required=True, help="output directory (published atomically)")
    h.add_argument("--cut", help="training cut, YYYY-MM-DD (default: day after the last event)")
    h.add_argument(
        "--relations",
        help="graph relations to keep, by type codes (default: every pair of types; "
        "ablations on audiobooks and podcasts: AA,AP / AP,PP / AA / PP)",
    )
    h.add_argument("--no-balanced", action="store_true", help="ablation: plain edge sampling")
    h.add_argument("--config", help="JSON file of HGNNConfig overrides")
    h.add_argument("--quiet", action="store_true")
    h.set_defaults(func=commands.cmd_hgnn)


def _training_commands(sub) -> None:
    """Training and judging: pipeline, evaluate."""
    pl = sub.add_parser("pipeline", help="the daily pipeline: dataset -> published artifact")
    pl.add_argument("--data", required=True, help="dataset directory (data contract)")
    pl.add_argument(
        "--workdir", required=True, help="work directory (features, models, artifacts/)"
    )
    pl.add_argument(
        "--cut",
        help="train on events before this day, YYYY-MM-DD (default: the day after the last event)",
    )
    pl.add_argument(
        "--skip-hgnn",
        action="store_true",
        help="reuse the last HGNN item embeddings (HGNN weekly, 2T daily)",
    )
    pl.add_argument(
        "--config",
        help="JSON file of PipelineConfig overrides: sections graph, "
        "hgnn, features, store, two_tower, index",
    )
    pl.add_argument(
        "--preset",
        choices=("auto", "standard", "large"),
        help="settings that fit the data's size (default auto: large from 10M events on)",
    )
    store_options(pl)
    engine_options(pl)
    pl.add_argument("--quiet", action="store_true")
    pl.set_defaults(func=commands.cmd_pipeline)

    ev = sub.add_parser("evaluate", help="every model on the hold-out, the paper's tables")
    ev.add_argument("--data", required=True, help="dataset directory (data contract)")
    ev.add_argument("--workdir", required=True, help="where the evaluation trains its models")
    ev.add_argument("--out", required=True, help="report directory")
    ev.add_argument("--seeds", help="two-tower seeds of the main rows, e.g. 0,1,2")
    ev.add_argument("--no-ablations", action="store_true", help="main rows only")
    ev.add_argument(
        "--config",
        help="JSON file of EvaluationConfig overrides (holdout_days, "
        "seeds, ablations, popularity_days, pipeline)",
    )
    engine_options(ev)
    ev.add_argument("--quiet", action="store_true")
    ev.set_defaults(func=commands.cmd_evaluate)

    ex = sub.add_parser(
        "experiment", help="the A/B readout: each arm's stream-through and new starts"
    )
    ex.add_argument("--workdir", required=True, help="the work directory the server logs into")
    ex.add_argument("--salt", help="the experiment (its --experiment-salt; default: the newest)")
    ex.add_argument("--since", help="only exposures from this UTC time on (YYYY-MM-DD[THH:MM])")
    ex.add_argument(
        "--window-hours", type=float, default=24.0, help="a stream counts this long after"
    )
    ex.add_argument(
        "--out", help="folder for readout.json/.png (default: WORKDIR/experiments/SALT)"
    )
    ex.set_defaults(func=commands.cmd_experiment)


def ciao_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--src",
        required=True,
        help="the folder of the public Ciao files (ratings.csv.gz, trust.csv.gz, "
        "catalog_ciao.txt; docs/evaluation.md says where they come from)",
    )
    parser.add_argument(
        "--sparse",
        dest="sparse_category",
        help="category in the audiobook role (default Books)",
    )
    parser.add_argument(
        "--dense", dest="dense_category", help="category in the podcast role (default DVDs)"
    )
    parser.add_argument("--min-item-ratings", type=int, help="k-core: ratings per item (3)")
    parser.add_argument("--min-user-ratings", type=int, help="k-core: ratings per user (3)")
    parser.add_argument("--import-config", help="JSON file of CiaoConfig overrides")


def _import_commands(sub) -> None:
    """Real data: import, ciao."""
    im = sub.add_parser("import", help="convert a public dataset into the data contract")
    im_sub = im.add_subparsers(dest="source", required=True, metavar="SOURCE")
    ic = im_sub.add_parser("ciao", help="Ciao (Tang et al.): ratings + trust network")
    ciao_options(ic)
    ic.add_argument("--out", required=True, help="dataset directory to write (atomically)")
    ic.set_defaults(func=commands.cmd_import_ciao)

    ca = sub.add_parser("ciao", help="import Ciao and evaluate every model on it (one command)")
    ciao_options(ca)
    ca.add_argument(
        "--workdir", default="runs/ciao", help="gets data/, eval/, report/ and evaluation.json"
    )
    ca.add_argument("--seeds", help="two-tower seeds of the main rows, e.g. 0,1,2")
    ca.add_argument("--no-ablations", action="store_true", help="main rows only")
    ca.add_argument(
        "--config", help="JSON file of EvaluationConfig overrides on top of the Ciao preset"
    )
    ca.add_argument("--quiet", action="store_true")
    ca.set_defaults(func=commands.cmd_ciao)


def _serve_command(sub) -> None:
    """The server: serve."""
    sv = sub.add_parser("serve", help="the gRPC recommender on the current artifact version")
    sv.add_argument("--workdir", required=True, help="work directory with artifacts/current")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=50051, help="0: any free port")
    store_options(sv)
    sv.add_argument("--metrics-port", type=int, help="serve Prometheus metrics over HTTP")
    sv.add_argument("--workers", type=int, help="request threads (default 4)")
    sv.add_argument(
        "--processes",
        type=int,
        default=1,
        help="server processes sharing the port (SO_REUSEPORT); about one per core",
    )
    sv.add_argument(
        "--arm",
        action="append",
        default=[],
        metavar="NAME=VERSION:SHARE",
        help="an A/B arm (repeat; shares sum to 1); VERSION: a published version or current",
    )
    sv.add_argument(
        "--tower-runtime",
        choices=("auto", "onnx", "tensorflow"),
        default="auto",
        help="the user tower's runtime (auto: ONNX Runtime when the version has it)",
    )
    sv.add_argument(
        "--experiment-salt",
        default="audiorec-ab",
        help="salt of the users' arm hash (a new one re-randomises the split)",
    )
    sv.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING"))
    sv.add_argument("--tls-cert", help="server certificate chain (PEM): serve over TLS")
    sv.add_argument("--tls-key", help="the certificate's private key (PEM)")
    sv.add_argument(
        "--tls-client-ca", help="CA (PEM) that client certificates must be signed by (mutual TLS)"
    )
    sv.add_argument(
        "--token-file",
        help="file holding the bearer token every call must "
        "carry (default: $AUDIOREC_TOKEN; none: no token)",
    )
    sv.add_argument("--no-reflection", action="store_true", help="turn server reflection off")
    sv.add_argument(
        "--no-event-log",
        action="store_true",
        help="keep no log of accepted events and answers (an outside event pipeline keeps them)",
    )
    sv.add_argument(
        "--no-exposures", action="store_true", help="log accepted events, not every answer"
    )
    sv.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback --host without TLS and a token",
    )
    sv.set_defaults(func=serve_commands.cmd_serve)


def _client_commands(sub) -> None:
    """Talking to a server and operating versions: recommend, event, rollback, demo."""
    rc = sub.add_parser("recommend", help="ask a running server (prints a table)")
    rc.add_argument("id", metavar="USER_ID", help="user id (item id with --similar)")
    rc.add_argument("--k", type=int, default=10)
    rc.add_argument(
        "--type",
        help="item type by name (default: audiobook; with --similar: the item's own type)",
    )
    rc.add_argument("--languages", help="comma-separated language filter, e.g. de,en")
    rc.add_argument("--include-consumed", action="store_true")
    rc.add_argument("--similar", action="store_true", help="items similar to the item id")
    rc.add_argument(
        "--explain", action="store_true", help="name the recent item behind each recommendation"
    )
    rc.add_argument("--arm", default="", help="answer as this experiment arm (default: the user's)")
    client_options(rc)

    ui = sub.add_parser(
        "ui", help="the inspector: web pages of a listener, a title and the model, from a server"
    )
    ui.add_argument("--workdir", required=True, help="the work directory the server serves")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    ui.add_argument("--port", type=int, default=8080, help="HTTP port (0: any free port)")
    ui.add_argument("--report", help="the evaluation report's folder (default: WORKDIR/report)")
    ui.add_argument(
        "--ui-token-file",
        help="file holding the token a browser must present (default: $AUDIOREC_UI_TOKEN; "
        "required beyond loopback)",
    )
    ui.add_argument("--ui-tls-cert", help="serve the pages over HTTPS with this certificate")
    ui.add_argument("--ui-tls-key", help="the certificate's private key (PEM)")
    ui.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback --host without TLS and a token",
    )
    ui.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING"))
    store_options(ui)
    client_options(ui)
    ui.set_defaults(func=serve_commands.cmd_ui)

    ev = sub.add_parser("event", help="record a real-time event on a running server")
    ev.add_argument("user_id", metavar="USER_ID")
    ev.add_argument("item_id", metavar="ITEM_ID")
    ev.add_argument("--type", default="stream", choices=EVENT_TYPES)
    ev.add_argument("--timestamp-ms", type=int, default=0, help="when (Unix ms; default: now)")
    ev.add_argument("--event-id", help="idempotency key (default: time, type and item)")
    client_options(ev)
    ev.set_defaults(func=serve_commands.cmd_event)

    it = sub.add_parser(
        "item", help="publish a new title to a running server (recommendable at once)"
    )
    it.add_argument("item_id", metavar="ITEM_ID")
    it.add_argument("--type", required=True, help="its item type, e.g. audiobook")
    it.add_argument("--title", required=True)
    it.add_argument("--description", default="")
    it.add_argument("--language", default="", help="e.g. en (a language filter matches it)")
    it.add_argument("--genre", default="")
    client_options(it)
    it.set_defaults(func=serve_commands.cmd_item)

    rb = sub.add_parser("rollback", help="point artifacts/current at an older version")
    rb.add_argument(
        "version",
        nargs="?",
        help="version name (default: the newest intact version older than current)",
    )
    rb.add_argument("--workdir", required=True, help="work directory with artifacts/")
    rb.add_argument("--list", action="store_true", help="list the versions (* = current)")
    rb.set_defaults(func=serve_commands.cmd_rollback)
    rc.set_defaults(func=serve_commands.cmd_recommend)

    d = sub.add_parser("demo", help="the README's main job, end to end on the defaults")
    d.add_argument("--workdir", default="runs/demo")
    d.add_argument("--scale", choices=("tiny", "demo", "large"), default="demo")
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--no-evaluate", action="store_true", help="skip the offline evaluation")
    d.set_defaults(func=commands.cmd_demo)


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
    bindings print dozens of harmless "nanobind: leaked ..." lines (docs/stack-notes.md, note 2).
    Every file is closed by then; only the output streams need flushing."""
    rc = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


if __name__ == "__main__":
    run()

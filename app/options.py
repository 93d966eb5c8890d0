"""The option groups several ``audiorec`` commands share: one set of flags and defaults."""

from __future__ import annotations

import argparse


def client_options(parser: argparse.ArgumentParser) -> None:
    """Where the server is and how to reach it: the options of every client command."""
    parser.add_argument("--target", default="127.0.0.1:50051", help="server host:port")
    parser.add_argument("--timeout", type=float, default=5.0, help="deadline in seconds")
    parser.add_argument("--token-file", help="bearer token file (default: $AUDIOREC_TOKEN)")
    parser.add_argument("--tls-ca", help="CA (PEM) to verify a TLS server with")
    parser.add_argument("--tls-cert", help="client certificate (PEM), for mutual TLS")
    parser.add_argument("--tls-key", help="client key (PEM), for mutual TLS")


def engine_options(parser: argparse.ArgumentParser) -> None:
    """Where the heavy steps run (PipelineConfig.engine; docs/beyond-one-machine.md)."""
    parser.add_argument(
        "--engine",
        choices=("local", "ray"),
        help="local (default: this process) or ray (feature jobs, graph, text, HGNN and "
        "Feast's offline work on Ray)",
    )
    parser.add_argument(
        "--ray-address",
        help="a running Ray cluster (ray://head:10001 or head:6379); default with "
        "--engine ray: a local instance within this machine's limits",
    )


def store_options(parser: argparse.ArgumentParser) -> None:
    """The online store (FeatureStoreConfig), one set of flags and defaults everywhere."""
    parser.add_argument(
        "--online", choices=("sqlite", "redis"), help="online store (default: sqlite)"
    )
    parser.add_argument("--redis", help="Redis connection string, host:port (with --online redis)")
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        help="the --redis address is a Redis Cluster node (with --online redis)",
    )

"""Hostile input, security and operations: limits, unparseable bytes, token, TLS,
exposure, secrets, rollback and start-up on an older version (issue 15)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess

import grpc
import pytest

from audiorec.artifact import artifacts_root, current_version, list_versions, set_current
from audiorec.v1 import recommender_pb2 as pb
from audiorec.v1 import recommender_pb2_grpc as pb_grpc

TOKEN = "t0ken-for-the-tests-0123456789"


@pytest.fixture(scope="module")
def server(tiny_pipeline):
    from serving.server import ServerConfig, create_server

    running = create_server(tiny_pipeline[0], ServerConfig(port=0, reload_interval_s=60))
    yield running
    running.stop(grace=1)


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


def _code(fn, *args, **kw):
    with pytest.raises(grpc.RpcError) as err:
        fn(*args, **kw)
    return err.value.code(), err.value.details()


def test_every_field_is_bounded_and_named(channel, users):
    stub = pb_grpc.RecommenderStub(channel)

    def ask(**kw):
        fields = {"user_id": users["warm"], "k": 10, "item_type": pb.AUDIOBOOK, **kw}
        return stub.Recommend(pb.RecommendRequest(**fields), timeout=10)

    cases = [
        ({"k": 1001}, "max_k"),
        ({"user_id": "u" * 300}, "max_id_chars"),
        ({"languages": [f"l{i}" for i in range(17)]}, "max_languages"),
        ({"languages": ["x" * 40]}, "max_language_chars"),
        ({"languages": [""] * 5000}, "empty entry"),
    ]
    for kw, limit in cases:
        code, details = _code(ask, **kw)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and limit in details, (kw.keys(), details)
        assert len(details) < 200, details  # never echoes the input whole
    # duplicates are dropped, not refused, and cost nothing: 3,000 x "en" is one language
    many = ask(user_id="u_nobody", languages=["en"] * 3000)
    assert many.strategy == pb.FALLBACK and len(many.items) == 10
    assert many.reason.count("en") == 1 and len(many.reason) < 200
    # a message over the server's receive limit is refused by gRPC itself
    code, _ = _code(ask, user_id="u" * 20_000)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_not_found_echoes_a_short_prefix(channel):
    stub = pb_grpc.RecommenderStub(channel)
    code, details = _code(
        stub.RecommendSimilar,
        pb.RecommendSimilarRequest(item_id="nope-" + "z" * 200, k=5, item_type=pb.AUDIOBOOK),
        timeout=10,
    )
    assert code == grpc.StatusCode.NOT_FOUND
    assert "z" * 40 not in details and "205 chars" in details


def _count(running, name, **labels) -> float:
    """A counter's value (servers in one process share counters: compare differences)."""
    return running.metrics.registry.get_sample_value(name, labels) or 0.0


def test_unparseable_bytes_are_invalid_argument_and_counted(channel, server):
    before = _count(server, "audiorec_rejected_total", reason="unparseable")
    raw = channel.unary_unary("/audiorec.v1.Recommender/Recommend")  # bytes in, bytes out
    for garbage in (b"\xff\xff\xff\xff", b"\x0a\x05\xff\xfe\xfd\xfc\xfb", b"\x08" * 3):
        code, details = _code(raw, garbage, timeout=5)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (garbage, code)
        assert "not a valid RecommendRequest" in details
    assert _count(server, "audiorec_rejected_total", reason="unparseable") == before + 3
    assert 'code="INVALID_ARGUMENT"' in server.metrics.exposition().decode()


def test_client_errors_do_not_flood_the_log(channel, users, caplog):
    stub = pb_grpc.RecommenderStub(channel)
    with caplog.at_level(logging.INFO, logger="audiorec"):
        for _ in range(200):
            _code(stub.Recommend, pb.RecommendRequest(user_id="", k=1), timeout=5)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) <= 1


def _certs(tmp_path):
    """A CA, a server certificate for 127.0.0.1 / localhost, and a client certificate."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed for the TLS tests (.ci/run installs it)")

    def run(*a):
        return subprocess.run(["openssl", *a], cwd=tmp_path, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=audiorec-test-ca",
    )
    (tmp_path / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
        )
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        )
    return tmp_path


def test_tls_client_certificates_and_token(tiny_pipeline, tmp_path, users):
    from audiorec.errors import AudiorecError
    from serving.client import Connection, recommend
    from serving.security import SecurityConfig
    from serving.server import ServerConfig, create_server

    d = _certs(tmp_path)
    sec = SecurityConfig(
        tls_cert=d / "server.pem",
        tls_key=d / "server.key",
        tls_client_ca=d / "ca.pem",
        token=TOKEN,
        reflection=False,
    )
    running = create_server(tiny_pipeline[0], ServerConfig(port=0, security=sec))
    before = _count(running, "audiorec_rejected_total", reason="unauthenticated")
    target = f"127.0.0.1:{running.port}"
    good = Connection(
        target,
        token=TOKEN,
        tls_ca=str(d / "ca.pem"),
        tls_cert=str(d / "client.pem"),
        tls_key=str(d / "client.key"),
    )
    try:
        assert recommend(good, users["warm"]).strategy == pb.PERSONALIZED
        for bad, code in [
            (
                Connection(
                    target,
                    token="wrong-token-0123456789",
                    tls_ca=good.tls_ca,
                    tls_cert=good.tls_cert,
                    tls_key=good.tls_key,
                ),
                "UNAUTHENTICATED",
            ),
            (
                Connection(
                    target, tls_ca=good.tls_ca, tls_cert=good.tls_cert, tls_key=good.tls_key
                ),
                "UNAUTHENTICATED",
            ),
            (
                Connection(target, token=TOKEN, tls_ca=good.tls_ca),  # no cert
                "UNAVAILABLE",
            ),
            (Connection(target, token=TOKEN), "UNAVAILABLE"),
        ]:  # plaintext
            with pytest.raises(AudiorecError, match=code):
                recommend(bad, users["warm"], timeout=5)
        # health needs no token (load balancers); reflection is off
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

        with good.channel() as ch:
            status = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            replies = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                timeout=5,
                metadata=good.metadata(),
            )
            code, _ = _code(list, replies)
            assert code == grpc.StatusCode.UNIMPLEMENTED
        assert _count(running, "audiorec_rejected_total", reason="unauthenticated") == before + 2
        assert TOKEN not in running.metrics.exposition().decode()
    finally:
        running.stop(grace=1)


def test_exposure_without_protection_is_refused(tiny_pipeline):
    from audiorec.errors import AudiorecError
    from serving.server import ServerConfig, create_server

    with pytest.raises(AudiorecError, match="without TLS and a token"):
        create_server(tiny_pipeline[0], ServerConfig(host="0.0.0.0", port=0))
    from app.cli import main

    assert (
        main(["serve", "--workdir", str(tiny_pipeline[0]), "--host", "0.0.0.0", "--port", "0"]) == 1
    )


def test_a_planted_password_never_leaks(tiny_pipeline, tmp_path, users, free_port, caplog):
    """Redis with a password that is down: the client, the logs, the metrics and the CLI
    see that the store is unavailable, never the connection string."""
    from audiorec.featurestore import FeatureStoreConfig
    from serving.server import ServerConfig, create_server
    from training.features.store import apply_repo

    secret = "Sup3rS3cretPassw0rd"
    store = FeatureStoreConfig(online="redis", redis=f"127.0.0.1:{free_port},password={secret}")
    wd = tmp_path / "wd"
    shutil.copytree(tiny_pipeline[0], wd)
    with caplog.at_level(logging.DEBUG, logger="audiorec"):
        running = create_server(wd, ServerConfig(port=0, store=store))
        try:
            with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
                stub = pb_grpc.RecommenderStub(ch)
                for _ in range(8):  # through the breaker opening
                    answer = stub.Recommend(
                        pb.RecommendRequest(user_id=users["warm"], k=5, item_type=pb.AUDIOBOOK),
                        timeout=5,
                    )
                    assert answer.strategy == pb.FALLBACK
                    assert secret not in answer.reason and "unavailable" in answer.reason
            metrics = running.metrics.exposition().decode()
        finally:
            running.stop(grace=1)
    from serving.logs import JsonFormatter

    logged = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert "breaker open" in logged
    assert secret not in logged and secret not in metrics
    from datetime import datetime, timezone

    from training.features.store import materialize

    with pytest.raises(Exception) as err:  # the training side: loading that store
        materialize(
            apply_repo(wd, store),
            datetime.now(timezone.utc),
            start=datetime(1970, 1, 2, tzinfo=timezone.utc),
        )
    assert secret not in str(err.value)
    assert "is unreachable" in str(err.value) and f"127.0.0.1:{free_port}" in str(err.value)


def test_cli_errors_are_redacted(capsys, monkeypatch):
    from app import cli, commands
    from audiorec.errors import AudiorecError

    def boom(args):
        raise AudiorecError(
            "cannot reach redis://admin:hunter2hunter2@db:6379 (host:6379,password=hunter2hunter2)"
        )

    monkeypatch.setattr(commands, "cmd_validate", boom)
    assert cli.main(["validate", "x"]) == 1
    err = capsys.readouterr().err
    assert "hunter2" not in err and "***" in err and len(err.strip().splitlines()) == 1


def _versions(tiny_pipeline, tmp_path):
    """A work directory with two more versions after the pipeline's: good, then broken."""
    wd = tmp_path / "wd"
    shutil.copytree(tiny_pipeline[0], wd)
    root = artifacts_root(wd)
    first = current_version(wd)
    for i, name in enumerate(("v29990101T000000Z", "v29990102T000000Z")):
        shutil.copytree(root / first, root / name)
        m = json.loads((root / name / "manifest.json").read_text())
        m.update(version=name, created_at=f"2999-01-0{i + 1}T00:00:00+00:00")
        (root / name / "manifest.json").write_text(json.dumps(m))
    with open(root / "v29990102T000000Z" / "items.parquet", "r+b") as f:
        f.truncate(100)  # broken after publishing
    set_current(wd, "v29990102T000000Z")
    return wd, first


def test_serve_starts_on_the_newest_loadable_version_then_rollback(
    tiny_pipeline, tmp_path, caplog, capsys
):
    from app.cli import main
    from serving.server import ServerConfig, create_server

    wd, first = _versions(tiny_pipeline, tmp_path)
    assert list_versions(wd) == [first, "v29990101T000000Z", "v29990102T000000Z"]
    with caplog.at_level(logging.ERROR, logger="audiorec"):
        running = create_server(wd, ServerConfig(port=0, reload_interval_s=0.1))
    try:
        assert running.holder.current.version == "v29990101T000000Z"
        assert any("does not load" in r.getMessage() for r in caplog.records)
        assert main(["rollback", "--workdir", str(wd)]) == 0
        assert "current is now v29990101T000000Z" in capsys.readouterr().out
        assert current_version(wd) == "v29990101T000000Z"
        assert main(["rollback", first, "--workdir", str(wd)]) == 0
        import time

        deadline = time.monotonic() + 10
        while running.holder.current.version != first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert running.holder.current.version == first  # hot-swapped back
        assert main(["rollback", "v-nope", "--workdir", str(wd)]) == 1
        assert "no artifact version 'v-nope'" in capsys.readouterr().err
    finally:
        running.stop(grace=1)


def test_retention_keeps_current_and_removes_dead_staging(tiny_pipeline, tmp_path):
    from audiorec.artifact import prune_versions

    wd, first = _versions(tiny_pipeline, tmp_path)
    set_current(wd, first)  # the oldest one is current: never removed
    dead = artifacts_root(wd) / ".v29990103T000000Z.tmp-999999999"
    dead.mkdir()
    removed = prune_versions(wd, keep=1)
    assert sorted(removed) == sorted([dead.name, "v29990101T000000Z"])
    assert list_versions(wd) == [first, "v29990102T000000Z"]


def test_workdir_with_yaml_syntax_in_its_path_keeps_the_stores_there(tmp_path):
    """The work directory is substituted into the parsed config, never into YAML text."""
    from audiorec.featurestore import repo_config

    wd = tmp_path / "odd #dir: \n[x]"
    cfg = repo_config(wd)
    assert cfg.online_store.path == str(wd.resolve() / "feast" / "online.db")
    assert cfg.registry.path == str(wd.resolve() / "feast" / "registry.db")


def test_read_timeouts_the_client_deadline_versus_the_store(tmp_path):
    """A read cut short by the client's deadline is DEADLINE_EXCEEDED and not the store's
    fault; a read past the store's own timeout counts toward opening the breaker."""
    import time

    from audiorec.errors import DeadlineExceeded, StoreUnavailable
    from serving.features import OnlineFeatures, StoreGuardConfig

    features = OnlineFeatures(
        tmp_path, guard=StoreGuardConfig(read_timeout_s=0.05, breaker_failures=3)
    )
    features._read = lambda user_id, project: time.sleep(0.2) or {}
    try:
        for _ in range(5):
            with pytest.raises(DeadlineExceeded):
                features("u1", time.monotonic() + 0.01)
        assert not features.breaker.is_open
        for _ in range(3):
            with pytest.raises(StoreUnavailable, match="no answer within 50 ms"):
                features("u1", time.monotonic() + 1.0)
        assert features.breaker.is_open
        with pytest.raises(StoreUnavailable, match="circuit breaker open"):
            features("u1", None)
    finally:
        features.close()


def test_slow_reads_while_warming_up_leave_the_breaker_closed(tmp_path):
    """A warm-up's slow first reads (tracing, paging in on a busy machine) say nothing
    about the store: they count nothing, and the breaker is closed after it; the same
    reads after the warm-up open it."""
    import time

    from audiorec.errors import StoreUnavailable
    from serving.features import OnlineFeatures, StoreGuardConfig

    features = OnlineFeatures(
        tmp_path, guard=StoreGuardConfig(read_timeout_s=0.02, breaker_failures=2)
    )
    features._read = lambda user_id, project: time.sleep(0.1) or {}
    try:
        with features.warming():
            for _ in range(4):
                with pytest.raises(StoreUnavailable, match="no answer"):
                    features("u1", None)
            assert not features.breaker.is_open
        assert not features.breaker.is_open
        for _ in range(2):
            with pytest.raises(StoreUnavailable, match="no answer"):
                features("u1", None)
        assert features.breaker.is_open
    finally:
        features.close()

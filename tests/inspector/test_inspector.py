"""The inspector's pages over real HTTP, against a real gRPC server on the tiny pipeline's
artifact, with an experiment of two arms; the Describe RPC and Recommend's arm field."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from inspector_helpers import start_inspector

from audiorec.errors import AudiorecError
from serving.client import CallFailed, describe, recommend

TOKEN = "t" * 24


def get(url: str, headers: dict | None = None) -> tuple[int, str, dict]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode(errors="replace"), dict(r.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace"), dict(err.headers)


def test_describe_and_answer_as_an_arm(grpc_server, users):
    target = f"127.0.0.1:{grpc_server.port}"
    info = describe(target)
    version = grpc_server.holder.current.version
    assert [(a.name, a.model_version, a.share) for a in info.arms] == [
        ("control", version, 0.5),
        ("treatment", version, 0.5),
    ]
    assert info.model_version == version and list(info.item_types) == ["audiobook", "podcast"]
    own = recommend(target, users["warm"]).arm
    other = "treatment" if own == "control" else "control"
    assert recommend(target, users["warm"], arm=other).arm == other
    with pytest.raises(CallFailed) as err:
        recommend(target, users["warm"], arm="x" * 500)
    assert err.value.status == "INVALID_ARGUMENT" and "control, treatment" in err.value.details
    assert len(err.value.details) < 200


def test_listener_page(ui, users):
    status, html, headers = get(ui.url + f"listener?id={users['warm']}")
    assert status == 200 and "default-src 'none'" in headers["Content-Security-Policy"]
    assert "PERSONALIZED" in html and "because you" in html
    assert html.count('href="/title?id=') >= 10
    assert "History before the cut" in html and "(no events)" not in html.split("Recommended")[0]
    assert "audiobook_items_90d" in html  # the online features
    for arm in ("control", "treatment"):
        status, html, _ = get(ui.url + f"listener?id={users['warm']}&arm={arm}")
        assert status == 200 and f'<span class="arm">{arm}</span>' in html


def test_title_and_model_pages(ui, tiny_pipeline):
    from inspector.workdir import Workdir

    version = tiny_pipeline[1].version
    item = next(iter(Workdir(tiny_pipeline[0]).catalogue(version)))
    status, html, _ = get(ui.url + f"title?id={item}")
    assert status == 200 and "Most similar audiobooks" in html and "Most similar podcasts" in html
    status, html, _ = get(ui.url + "model")
    assert status == 200 and version in html and "control" in html and "/chart/" in html
    chart = html.split('src="/chart/')[1].split('"')[0]
    status, body, headers = get(ui.url + f"chart/{chart}")
    assert status == 200 and headers["Content-Type"] == "image/png"


def test_bad_input_is_a_short_escaped_message(ui):
    status, html, _ = get(ui.url + "listener?id=")
    assert status == 400 and "enter a listener id" in html
    status, html, _ = get(ui.url + "listener?id=" + "u" * 300)
    assert status == 400 and "at most 256 characters" in html and "u" * 100 not in html
    status, html, _ = get(ui.url + "title?id=%3Cscript%3Ealert(1)%3C/script%3E")
    assert status == 404 and "<script>" not in html and "&lt;script&gt;" in html
    status, html, _ = get(ui.url + "listener?id=u1&arm=nope")
    assert status == 400 and "no arm &#39;nope&#39;" in html
    status, _, _ = get(ui.url + "chart/..%2F..%2Fmanifest.json")
    assert status == 404
    status, _, _ = get(ui.url + "listener?" + "&".join(f"a{i}=1" for i in range(20)))
    assert status == 400
    status, _, _ = get(ui.url + "x" * 5000)
    assert status == 414


def test_unknown_listener_is_a_fallback_page(ui):
    status, html, _ = get(ui.url + "listener?id=u_nobody")
    assert status == 200 and "FALLBACK" in html and "(no events)" in html


def test_a_stopped_server_is_a_message(tiny_pipeline, free_port):
    running, features = start_inspector(tiny_pipeline[0], f"127.0.0.1:{free_port}")
    try:
        status, html, _ = get(running.url + "listener?id=u1")
        assert status == 503 and "does not answer" in html and "Traceback" not in html
    finally:
        running.stop()
        features.close()


def test_token_and_exposure(tiny_pipeline, grpc_server):
    from inspector.server import InspectorConfig, check_exposure

    with pytest.raises(AudiorecError, match="without TLS and a token"):
        check_exposure(InspectorConfig(host="0.0.0.0"))
    check_exposure(InspectorConfig(host="0.0.0.0", insecure=True))
    running, features = start_inspector(
        tiny_pipeline[0], f"127.0.0.1:{grpc_server.port}", token=TOKEN
    )
    try:
        status, html, _ = get(running.url + "model")
        assert status == 401 and "needs its token" in html and TOKEN not in html
        assert get(running.url + "model", {"Cookie": "audiorec_ui=wrong"})[0] == 401
        assert get(running.url + "healthz")[0] == 200

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as err:
            opener.open(running.url + f"model?token={TOKEN}", timeout=10)
        assert err.value.code == 303 and err.value.headers["Location"] == "/model"
        cookie = err.value.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        status, html, _ = get(running.url + "model", {"Cookie": cookie.split(";")[0]})
        assert status == 200 and "The served model" in html
    finally:
        running.stop()
        features.close()


def test_looking_is_not_an_exposure(grpc_server, ui, users):
    """The inspector's calls carry the inspect purpose: the server logs no exposure for
    them, while a listener's own call is logged (the readout counts only what was shown)."""
    import time

    written = grpc_server.metrics.logged.labels(kind="exposures", result="written")

    def settle() -> float:
        last = -1.0
        for _ in range(50):
            now = written._value.get()
            if now == last:
                return now
            last = now
            time.sleep(0.1)
        return last

    before = settle()
    assert get(ui.url + f"listener?id={users['warm']}")[0] == 200
    assert settle() == before
    recommend(f"127.0.0.1:{grpc_server.port}", users["warm"])
    assert settle() == before + 1

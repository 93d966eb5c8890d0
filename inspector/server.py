"""The inspector's HTTP server: server-rendered pages, no front-end build step.

:func:`create_server` returns a started server (the standard library's threaded HTTP
server: an inspector serves a few people, not traffic). Safe by default:

- it binds loopback; any other address needs a token and TLS (as ``audiorec serve``
  does), unless the operator says ``insecure``;
- with a token, a browser opens ``/?token=...`` once: the token becomes an HttpOnly,
  SameSite=Strict cookie and the address bar drops it; a request without it gets 401;
- URLs are bounded (``max_url_chars``, 8 query fields); every value a page prints is
  escaped by the templates (Jinja2 autoescape); the Content-Security-Policy allows
  nothing but this origin's stylesheet and images, so injected markup could not run;
- a failure is a short message with the right status (400, 401, 404, 503), never a
  stack trace; a bug is logged and answered 500 with its type only.
"""

from __future__ import annotations

import hmac
import logging
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jinja2
from pydantic import Field, SecretStr

from audiorec.config import StrictConfig
from audiorec.errors import AudiorecError
from audiorec.v1 import recommender_pb2 as pb
from inspector.pages import Inspector, PageError
from serving.security import is_loopback

log = logging.getLogger("audiorec.inspector")
STATIC = Path(__file__).parent / "static"
COOKIE = "audiorec_ui"
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class InspectorConfig(StrictConfig):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)  # 0: any free port
    token: SecretStr | None = Field(None, min_length=16)  # None: no token
    tls_cert: Path | None = None  # serve HTTPS with this certificate chain (PEM)
    tls_key: Path | None = None
    insecure: bool = False  # allow a non-loopback bind without TLS and a token
    max_url_chars: int = Field(2048, ge=64, le=65536)


def check_exposure(cfg: InspectorConfig) -> None:
    if is_loopback(cfg.host) or (cfg.token is not None and cfg.tls_cert is not None):
        return
    if not cfg.insecure:
        raise AudiorecError(
            f"refusing to serve the inspector on {cfg.host} without TLS and a token: anyone "
            "who can reach the address could read every listener's history (set "
            "--tls-cert/--tls-key and --ui-token-file, or pass --insecure to accept the risk)"
        )
    log.warning("inspector exposed on %s without TLS and a token (--insecure)", cfg.host)


@dataclass
class RunningInspector:
    httpd: ThreadingHTTPServer
    port: int
    thread: threading.Thread

    @property
    def url(self) -> str:
        host = str(self.httpd.server_address[0])
        scheme = "https" if isinstance(self.httpd.socket, ssl.SSLSocket) else "http"
        return f"{scheme}://{host}:{self.port}/"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def create_server(
    inspector: Inspector, cfg: InspectorConfig = InspectorConfig()
) -> RunningInspector:
    """Bind, start serving on a daemon thread, and return."""
    check_exposure(cfg)
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("inspector", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(target=inspector.conn.target, strategy_name=pb.Strategy.Name, info=None)
    handler = type("Handler", (_Handler,), {"inspector": inspector, "env": env, "cfg": cfg})
    httpd = ThreadingHTTPServer((cfg.host, cfg.port), handler)
    httpd.daemon_threads = True
    if cfg.tls_cert is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, name="inspector", daemon=True)
    thread.start()
    return RunningInspector(httpd, httpd.server_address[1], thread)


class _Handler(BaseHTTPRequestHandler):
    inspector: Inspector
    env: jinja2.Environment
    cfg: InspectorConfig
    server_version = "audiorec-inspector"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        if len(self.path) > self.cfg.max_url_chars:
            return self._page(414, "error.html", {"message": "the address is too long"})
        url = urlsplit(self.path)
        try:
            query = {
                k: v[0]
                for k, v in parse_qs(url.query, keep_blank_values=True, max_num_fields=8).items()
            }
        except ValueError:
            return self._page(400, "error.html", {"message": "too many query fields"})
        if not self._authorised(url.path, query):
            return None
        try:
            self._route(url.path, query)
        except PageError as exc:
            self._page(exc.status, "error.html", {"message": str(exc)})
        except AudiorecError as exc:
            status = 404 if exc.status == "NOT_FOUND" else 500
            self._page(status, "error.html", {"message": str(exc)[:200]})
        except Exception as exc:  # noqa: BLE001 - a bug: a short page, the trace in the log
            log.exception("inspector page failed")
            self._page(500, "error.html", {"message": f"internal error ({type(exc).__name__})"})
        return None

    def _route(self, path: str, query: dict[str, str]) -> None:
        ins = self.inspector
        if path == "/":
            self._page(*ins.home())
        elif path == "/listener":
            self._page(*ins.listener(query.get("id"), query.get("arm")))
        elif path == "/title":
            self._page(*ins.title(query.get("id")))
        elif path == "/model":
            self._page(*ins.model())
        elif path.startswith("/chart/"):
            name = path.removeprefix("/chart/")
            version = ins.served().model_version
            self._file(ins.workdir.chart(name, version), "image/png")
        elif path == "/static/style.css":
            self._file(STATIC / "style.css", "text/css; charset=utf-8")
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        else:
            raise PageError(404, "no such page")

    def _authorised(self, path: str, query: dict[str, str]) -> bool:
        token = self.cfg.token.get_secret_value() if self.cfg.token else None
        if token is None or path == "/healthz":
            return True
        offered = query.get("token")
        if offered is not None and hmac.compare_digest(offered.encode(), token.encode()):
            self.send_response(303)  # into the cookie, out of the address bar and history
            self.send_header("Location", path)
            self.send_header(
                "Set-Cookie",
                f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
                + ("; Secure" if self.cfg.tls_cert else ""),
            )
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False
        cookies = self.headers.get("Cookie", "")
        for part in cookies.split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and hmac.compare_digest(value.encode(), token.encode()):
                return True
        self._page(
            401,
            "error.html",
            {"message": "this inspector needs its token: open it once as /?token=TOKEN"},
        )
        return False

    def _page(self, status: int, template: str, context: dict[str, Any]) -> None:
        html = self.env.get_template(template).render(status=status, **context)
        self._send(status, html.encode(), "text/html; charset=utf-8")

    def _file(self, path: Path, content_type: str) -> None:
        self._send(200, path.read_bytes(), content_type)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in HEADERS.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        # the path only: a query string may hold a token or a listener id
        status = args[1] if len(args) > 1 else ""
        log.debug("%s %s -> %s", self.command, urlsplit(self.path).path, status)

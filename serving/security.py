"""Who may call the server and over what: TLS, client certificates, a bearer token.

- **TLS**: ``tls_cert`` + ``tls_key`` (PEM) serve over TLS; ``tls_client_ca`` also
  requires every client to present a certificate signed by that CA (mutual TLS).
- **Token**: with a token set, every call but the health check must carry the metadata
  ``authorization: Bearer <token>``; anything else gets UNAUTHENTICATED. The token is
  compared in constant time and never logged (a pydantic ``SecretStr``).
- **Exposure**: binding an address other than loopback without both TLS and a token is
  refused unless the operator says ``insecure`` (then it is logged as a warning).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from pathlib import Path
from typing import Any, Callable

import grpc
from pydantic import Field, SecretStr

from audiorec.config import StrictConfig
from audiorec.errors import AudiorecError

log = logging.getLogger("audiorec.serving")
HEALTH_PREFIX = "/grpc.health.v1.Health/"


class SecurityConfig(StrictConfig):
    tls_cert: Path | None = None  # server certificate chain (PEM)
    tls_key: Path | None = None  # its private key (PEM)
    tls_client_ca: Path | None = None  # require client certificates signed by this CA
    token: SecretStr | None = Field(None, min_length=16)  # bearer token; None: no token
    reflection: bool = True  # gRPC server reflection (lists the services)
    insecure: bool = False  # allow a non-loopback bind without TLS + token


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, cfg: SecurityConfig) -> None:
    """Refuse to listen beyond this machine unprotected, unless told ``insecure``."""
    protected = cfg.tls_cert is not None and cfg.token is not None
    if is_loopback(host) or protected:
        return
    if not cfg.insecure:
        raise AudiorecError(
            f"refusing to serve on {host} without TLS and a token: anyone who can reach the "
            "address could call it (set --tls-cert/--tls-key and AUDIOREC_TOKEN or "
            "--token-file, or pass --insecure to accept the risk)"
        )
    log.warning(
        "serving beyond loopback without TLS and a token (--insecure)",
        extra={
            "fields": {
                "host": host,
                "tls": cfg.tls_cert is not None,
                "token": cfg.token is not None,
            }
        },
    )


def server_credentials(cfg: SecurityConfig) -> grpc.ServerCredentials | None:
    if cfg.tls_cert is None and cfg.tls_key is None:
        if cfg.tls_client_ca is not None:
            raise AudiorecError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if cfg.tls_cert is None or cfg.tls_key is None:
        raise AudiorecError("TLS needs both --tls-cert and --tls-key")
    cert, key = _read(cfg.tls_cert, "certificate"), _read(cfg.tls_key, "key")
    ca = _read(cfg.tls_client_ca, "client CA") if cfg.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
    )


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise AudiorecError(f"cannot read the TLS {what} {path}: {exc.strerror}") from None


class TokenInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    """UNAUTHENTICATED for any call without the right bearer token (health exempt: load
    balancers probe it without credentials)."""

    def __init__(self, token: SecretStr, on_reject: Callable[[], None] = lambda: None):
        self._expected = f"Bearer {token.get_secret_value()}".encode()
        self._on_reject = on_reject

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(HEALTH_PREFIX):
            return handler
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                got = value.encode() if isinstance(value, str) else value
                if hmac.compare_digest(got, self._expected):
                    return handler
                break
        self._on_reject()
        # A refusal of the same shape as the method (reflection streams both ways).
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(_deny)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(_deny)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(_deny)
        return grpc.unary_unary_rpc_method_handler(_deny)


def _deny(request: Any, context: Any) -> None:
    context.abort(
        grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token (metadata 'authorization')"
    )

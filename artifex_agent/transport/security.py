"""Shared token on every RPC, optional mutual TLS, and the loopback-by-default rule."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from artifex_agent.config import SecurityConfig, is_loopback
from artifex_agent.errors import ConfigError

logger = logging.getLogger(__name__)

TOKEN_HEADER = "authorization"


def check_bind_allowed(listen: str, security: SecurityConfig, token: str) -> None:
    """Refuse to listen beyond loopback without a token unless explicitly insecure."""
    if is_loopback(listen) or token or security.insecure:
        return
    raise ConfigError(
        f"refusing to listen on {listen} without a shared token: set [security] token or token_file "
        "(or ARTIFEX_TOKEN), or pass --insecure on a network you trust"
    )


def call_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """Metadata that carries the shared token on a call."""
    return ((TOKEN_HEADER, f"Bearer {token}"),) if token else ()


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Answers UNAUTHENTICATED to any RPC without the right bearer token; `service` names who refuses."""

    def __init__(self, token: str, service: str = "agent") -> None:
        self._expected = f"Bearer {token}".encode()
        self._service = service

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        sent = dict(details.invocation_metadata or ()).get(TOKEN_HEADER, "")
        sent_b = sent.encode() if isinstance(sent, str) else bytes(sent)
        if hmac.compare_digest(sent_b, self._expected):
            return await continuation(details)
        logger.warning("refused %s: %s token", details.method, "wrong" if sent else "missing")
        handler = await continuation(details)
        why = "missing or wrong token" if sent else f"this {self._service} requires a token (ARTIFEX_TOKEN)"
        return _deny(handler, why)


def _deny(handler: grpc.RpcMethodHandler | None, message: str) -> grpc.RpcMethodHandler:
    async def abort(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def abort_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - makes this an async generator

    # Keep the shape of the real method so the client sees a clean status, not a protocol error.
    # An unknown method gets a client-streaming handler: it aborts without waiting for a request
    # message that a stream may never send.
    if handler is None:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler.response_streaming:
        make = grpc.stream_stream_rpc_method_handler if handler.request_streaming else \
            grpc.unary_stream_rpc_method_handler
        return make(abort_stream)
    make = grpc.stream_unary_rpc_method_handler if handler.request_streaming else grpc.unary_unary_rpc_method_handler
    return make(abort)


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path!r}: {exc.strerror}") from None


def server_credentials(security: SecurityConfig) -> grpc.ServerCredentials | None:
    """Mutual TLS server credentials when configured (clients must present a cert from the CA)."""
    if not security.tls:
        return None
    key, cert = _read(security.tls_key, "tls_key"), _read(security.tls_cert, "tls_cert")
    ca = _read(security.tls_ca, "tls_ca") if security.tls_ca else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)


def channel_credentials(security: SecurityConfig) -> grpc.ChannelCredentials | None:
    """Client credentials for mutual TLS when configured."""
    if not security.tls:
        return None
    ca = _read(security.tls_ca, "tls_ca") if security.tls_ca else None
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=_read(security.tls_key, "tls_key"),
                                        certificate_chain=_read(security.tls_cert, "tls_cert"))

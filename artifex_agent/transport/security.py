"""Shared token on every RPC, optional mutual TLS, and the loopback-by-default rule."""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from artifex_agent.config import Secrets, SecurityConfig, is_loopback
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
    """Answers UNAUTHENTICATED to any RPC without the right bearer token; `service` names who refuses.

    An empty token lets every call through; set_token() swaps the token for calls that start later.
    """

    def __init__(self, token: str, service: str = "agent") -> None:
        self._service = service
        self.set_token(token)

    def set_token(self, token: str) -> None:
        # One attribute assignment: a call being checked sees the old token or the new one, never half.
        self._expected = f"Bearer {token}".encode() if token else None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        expected = self._expected
        if expected is None:
            return await continuation(details)
        sent = dict(details.invocation_metadata or ()).get(TOKEN_HEADER, "")
        sent_b = sent.encode() if isinstance(sent, str) else bytes(sent)
        if hmac.compare_digest(sent_b, expected):
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


def reload_security(security: SecurityConfig, token_check: TokenInterceptor, who: str) -> str | None:
    """Re-read the token and TLS files (SIGHUP) and swap the token in; the new token, or None when it failed.

    Calls and streams already open keep going; new calls are checked against the new token, and
    new outgoing channels take the new token and TLS files, as do new connections to this
    process's TLS port (server_credentials).
    """
    try:
        secrets = security.resolve()
    except ConfigError as exc:
        logger.error("%s: reload failed, keeping the token and TLS files read before: %s", who, exc)
        return None
    token_check.set_token(secrets.token)
    logger.info("%s: reloaded the token (%s) and TLS files", who, "set" if secrets.token else "none")
    return secrets.token


def server_credentials(security: SecurityConfig) -> grpc.ServerCredentials | None:
    """Mutual TLS server credentials when configured (clients must present a cert from the CA).

    Each new connection's handshake takes the files of the last resolve(), so a reload (SIGHUP)
    reaches the listening port too; connections already open keep theirs.
    """
    if not security.tls:
        return None
    served = security.secrets

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        # Called by gRPC's own threads on every handshake: None keeps the configuration it has.
        nonlocal served
        current = security.secrets
        if current is served:
            return None
        served = current
        return _certificate_configuration(current)

    return grpc.dynamic_ssl_server_credentials(_certificate_configuration(served), fetch,
                                               require_client_authentication=bool(served.tls_ca))


def channel_credentials(security: SecurityConfig) -> grpc.ChannelCredentials | None:
    """Client credentials for mutual TLS when configured."""
    return _channel_credentials(security.secrets) if security.tls else None


def _certificate_configuration(secrets: Secrets) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(secrets.tls_key, secrets.tls_cert)],
                                                     root_certificates=secrets.tls_ca or None)


# Built once per set of files read (a reload reads a new set): every channel shares one object.
@functools.lru_cache(maxsize=4)
def _channel_credentials(secrets: Secrets) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=secrets.tls_ca or None, private_key=secrets.tls_key,
                                        certificate_chain=secrets.tls_cert)

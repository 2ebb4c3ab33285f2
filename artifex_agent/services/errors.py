"""Domain errors to gRPC status codes; internals never leak into messages."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar

import grpc

from artifex_agent.errors import (
    ArtifexError,
    ConfigError,
    NotFoundError,
    RequestError,
    ResourceError,
    StreamError,
)

logger = logging.getLogger(__name__)

_CODES: list[tuple[type[ArtifexError], grpc.StatusCode]] = [
    (RequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (ResourceError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (StreamError, grpc.StatusCode.DATA_LOSS),
    (ConfigError, grpc.StatusCode.FAILED_PRECONDITION),
]

T = TypeVar("T")


def status_for(exc: ArtifexError) -> grpc.StatusCode:
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.FAILED_PRECONDITION


async def abort_for(exc: BaseException, context: grpc.aio.ServicerContext, method: str) -> None:
    """Abort the RPC with the status for `exc`; unexpected errors are logged and stay generic."""
    if isinstance(exc, ArtifexError):
        logger.info("%s refused: %s", method, exc)
        await context.abort(status_for(exc), str(exc))
    logger.error("%s failed", method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error in the agent (see its log)")


def _passthrough(exc: BaseException) -> bool:
    # context.abort() raises an AbortError; cancellation must propagate untouched.
    return isinstance(exc, grpc.aio.AbortError) or not isinstance(exc, Exception)


def unary(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Map errors of a unary/stream-unary handler."""
    @wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> T:
        try:
            return await fn(self, request, context)
        except BaseException as exc:
            if _passthrough(exc):
                raise
            await abort_for(exc, context, fn.__qualname__)
            raise  # unreachable: abort raises
    return wrapper


def streaming(fn: Callable[..., AsyncIterator[T]]) -> Callable[..., AsyncIterator[T]]:
    """Map errors of a server-streaming handler (an async generator)."""
    @wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[T]:
        try:
            async for item in fn(self, request, context):
                yield item
        except BaseException as exc:
            if _passthrough(exc):
                raise
            await abort_for(exc, context, fn.__qualname__)
    return wrapper

"""Domain errors to gRPC status codes; internals never leak into messages."""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar

import grpc

from artifex_agent.errors import (
    ArtifexError,
    ConfigError,
    DeadlineError,
    MalformedMessage,
    NotFoundError,
    RequestError,
    ResourceError,
    StreamError,
)
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb

logger = logging.getLogger(__name__)

# First match wins: subclasses before their bases.
_CODES: list[tuple[type[ArtifexError], grpc.StatusCode]] = [
    (RequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (ResourceError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (MalformedMessage, grpc.StatusCode.INVALID_ARGUMENT),
    (StreamError, grpc.StatusCode.DATA_LOSS),
    (DeadlineError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (ConfigError, grpc.StatusCode.FAILED_PRECONDITION),
]
# OS errors the caller can act on; any other OSError is an internal error.
_DISK_FULL = {errno.ENOSPC, *([errno.EDQUOT] if hasattr(errno, "EDQUOT") else [])}


class Quiet:
    """Logs the first event of a kind, then at most one line per `every` seconds with how many were left out.

    Refusals cost a caller nothing to provoke: a fuzzer sending garbage must not turn into a
    log line per message.
    """

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self._last: dict[Any, float] = {}
        self._left: dict[Any, int] = {}

    def log(self, level: int, key: Any, msg: str, *args: Any) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.every:
            self._left[key] = self._left.get(key, 0) + 1
            return
        self._last[key] = now
        left = self._left.pop(key, 0)
        if left:
            msg, args = msg + " (and %d more like it since the last line)", (*args, left)
        logger.log(level, msg, *args)


refusals = Quiet()

T = TypeVar("T")


def status_for(exc: ArtifexError) -> grpc.StatusCode:
    # Another agent's answer passed on (transport/post_call.RemoteError) keeps its status.
    passed_on = getattr(exc, "code", None)
    if isinstance(passed_on, grpc.StatusCode):
        return passed_on
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.FAILED_PRECONDITION


def os_status(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """The status for an OSError the caller can act on (disk full, name too long, planted link), or None."""
    if not isinstance(exc, OSError):
        return None
    if exc.errno in _DISK_FULL:
        # The folder, not the temporary file: that is where space must be made.
        where = os.path.dirname(exc.filename) if isinstance(exc.filename, str) else "the agent's output volume"
        return grpc.StatusCode.RESOURCE_EXHAUSTED, f"disk full on {where}"
    if exc.errno == errno.ENAMETOOLONG:
        return grpc.StatusCode.INVALID_ARGUMENT, "a file name is too long for the agent's file system"
    if exc.errno == errno.ELOOP:
        # A link planted where a temporary or output folder goes (engines/temp_files.py): an
        # operator must look, so the path goes to the log, not to a possibly hostile caller.
        return (grpc.StatusCode.FAILED_PRECONDITION,
                "refused to write through a symbolic link in the output folder; see the agent's log")
    return None


def status_and_message(exc: BaseException, method: str) -> tuple[grpc.StatusCode, str]:
    """The status and message for `exc` (logged); unexpected errors are logged with their traceback and stay generic."""
    if isinstance(exc, ArtifexError):
        code = status_for(exc)
        refusals.log(logging.INFO, (method, code), "%s refused: %s", method, exc)
        return code, str(exc)
    known = os_status(exc)
    if known is not None:
        logger.warning("%s failed: %s (%s)", method, known[1], exc)
        return known
    logger.error("%s failed", method, exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal error in the agent (see its log)"


async def abort_for(exc: BaseException, context: grpc.aio.ServicerContext, method: str) -> None:
    """Abort the RPC with the status for `exc`; unexpected errors are logged and stay generic."""
    await context.abort(*status_and_message(exc, method))


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
    return _streaming(fn, None)


def streaming_with_error_event(event: Callable[[pb.ErrorStatus], T]) -> Callable[
        [Callable[..., AsyncIterator[T]]], Callable[..., AsyncIterator[T]]]:
    """Like `streaming`, and the status goes out first as a last event built by `event`.

    A client still writing when the handler refuses may be told INTERNAL "Internal error
    from Core" by grpc instead of the real status; the event arrives before it either way.
    """
    return lambda fn: _streaming(fn, event)


def _streaming(fn: Callable[..., AsyncIterator[T]],
               event: Callable[[pb.ErrorStatus], T] | None) -> Callable[..., AsyncIterator[T]]:
    @wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[T]:
        try:
            async for item in fn(self, request, context):
                yield item
        except BaseException as exc:
            if _passthrough(exc):
                raise
            code, message = status_and_message(exc, fn.__qualname__)
            if event is not None:
                yield event(pb.ErrorStatus(code=code.value[0], message=message))
            await context.abort(code, message)
    return wrapper

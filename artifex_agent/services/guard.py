"""What reaches a handler: parsed requests only, a bounded wait for a unary request, unknown methods refused.

gRPC parses protobuf requests before the handler runs, and a parse failure there answered
UNKNOWN with the parser's text and logged a traceback per message (15,000 lines in one fuzz
run). RequestGuard parses them itself: garbage is INVALID_ARGUMENT "malformed request" and one
rate-limited log line. Raw-bytes streams (no deserializer) parse their own messages
(transport/wire.py) and are left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from artifex_agent.services.errors import refusals

MALFORMED = "malformed request"


class RequestGuard(grpc.aio.ServerInterceptor):
    """Parses protobuf requests for the handlers; a unary request must arrive within `idle_s`.

    Unary-request methods are served as client streams whose first message is the request:
    a client that opens a stream to one and sends nothing is ended after `idle_s` instead of
    holding the call until its own deadline, if it has one.
    """

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        behaviour = _behaviour(handler)
        if not (inspect.iscoroutinefunction(behaviour) or inspect.isasyncgenfunction(behaviour)):
            return handler  # a sync handler: gRPC runs it in a thread, as it is
        return _parsing(handler, behaviour, details.method, self.idle_s)


def _behaviour(handler: grpc.RpcMethodHandler) -> Any:
    return (handler.unary_unary or handler.unary_stream or handler.stream_unary  # type: ignore[attr-defined]
            or handler.stream_stream)  # type: ignore[attr-defined]


async def _parse(raw: bytes, parse: Callable[[bytes], Any], context: grpc.aio.ServicerContext, method: str) -> Any:
    try:
        return parse(raw)
    except Exception:  # DecodeError and kin; their text names protobuf internals, not the caller's mistake
        refusals.log(logging.INFO, (method, "malformed"), "%s refused: %s", method, MALFORMED)
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, MALFORMED)


def _parsing(handler: grpc.RpcMethodHandler, behaviour: Any, method: str, idle_s: float) -> grpc.RpcMethodHandler:
    """The same method over raw bytes, parsing each request before `behaviour` sees it."""
    parse = handler.request_deserializer
    serialize = handler.response_serializer

    async def first(requests: AsyncIterable[bytes], context: grpc.aio.ServicerContext) -> Any:
        try:
            async with asyncio.timeout(idle_s):
                raw = await anext(aiter(requests))
        except StopAsyncIteration:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the call ended without its request")
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"no request within {idle_s:g}s (stream_idle_s)")
        return await _parse(raw, parse, context, method)

    async def each(requests: AsyncIterable[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for raw in requests:
            yield await _parse(raw, parse, context, method)

    async def arg(requests: AsyncIterable[bytes], context: grpc.aio.ServicerContext) -> Any:
        return each(requests, context) if handler.request_streaming else await first(requests, context)

    if inspect.isasyncgenfunction(behaviour):
        async def stream(requests: AsyncIterable[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with contextlib.aclosing(behaviour(await arg(requests, context), context)) as responses:
                async for response in responses:
                    yield response
        return grpc.stream_stream_rpc_method_handler(stream, response_serializer=serialize)

    async def call(requests: AsyncIterable[bytes], context: grpc.aio.ServicerContext) -> Any:
        return await behaviour(await arg(requests, context), context)

    make = grpc.stream_stream_rpc_method_handler if handler.response_streaming else \
        grpc.stream_unary_rpc_method_handler
    return make(call, response_serializer=serialize)


class UnknownMethods(grpc.GenericRpcHandler):
    """Registered last: any method no other handler serves is UNIMPLEMENTED at once.

    Without it an unknown method reached the token check as None, which answers with a unary
    handler; that waits for a request message a client stream may never send.
    """

    def __init__(self, service: str = "agent") -> None:
        self._service = service

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = str(details.method)[:200]
        who = self._service

        async def unimplemented(requests: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"this {who} has no method {method!r}")

        return grpc.stream_unary_rpc_method_handler(unimplemented)

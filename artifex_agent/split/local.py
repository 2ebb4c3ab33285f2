"""This agent's own half of a split job, called in process: no socket, no serialisation of the call itself.

A Deliver with a split plan (delivery/split.py) drives both halves through split/streams.py,
which expects gRPC calls: LocalSplit answers them from this agent's SplitService directly. Its
calls behave like a remote call to the stream code: an async iterator of raw events, cancel(),
and failures raised as grpc.aio.AioRpcError with the status the servicer would have sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Protocol

import grpc

from artifex_agent.services.admission import Ticket
from artifex_agent.services.errors import status_and_message

# Events a local call keeps ahead of its reader: the same back-pressure a socket's window gives.
QUEUE_EVENTS = 4
_END = object()


class LocalCall:
    """One in-process Denoise or CfgPeer: the servicer's events through a small queue."""

    def __init__(self, events: AsyncGenerator[bytes, None], method: str) -> None:
        self.method = method
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=QUEUE_EVENTS)
        self._task = asyncio.ensure_future(self._pump(events))

    async def _pump(self, events: AsyncGenerator[bytes, None]) -> None:
        item: Any = _END
        try:
            async with contextlib.aclosing(events):
                async for event in events:
                    await self._queue.put(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the status a remote caller would get, raised to the reader
            code, message = status_and_message(exc, self.method)
            item = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=message)
        await self._queue.put(item)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._read()

    async def _read(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def cancel(self) -> bool:
        """Stop the servicer (its stream's cleanup runs as for a cancelled RPC)."""
        return self._task.cancel()


# (the stream's ticket, its incoming messages) -> its events
Run = Callable[[AsyncIterator[bytes], Ticket], AsyncGenerator[bytes, None]]


class SplitServicer(Protocol):
    """What LocalSplit calls of services/split.SplitService (which imports, through services/generate, this module)."""

    def admitted(self, method: str, run: Run, request_iterator: Any) -> AsyncGenerator[bytes, None]: ...
    def denoise_events(self, incoming: AsyncIterator[bytes], ticket: Ticket) -> AsyncGenerator[bytes, None]: ...
    def cfg_events(self, incoming: AsyncIterator[bytes], ticket: Ticket) -> AsyncGenerator[bytes, None]: ...


class LocalSplit:
    """This agent's SplitService as split/streams.py calls an agent."""

    def __init__(self, service: SplitServicer) -> None:
        self.service = service

    def _call(self, method: str, run: Run, requests: Any) -> LocalCall:
        return LocalCall(self.service.admitted(method, run, requests), method)

    def denoise(self, requests: Any) -> LocalCall:
        return self._call("Denoise", self.service.denoise_events, requests)

    def cfg_peer(self, requests: Any) -> LocalCall:
        return self._call("CfgPeer", self.service.cfg_events, requests)

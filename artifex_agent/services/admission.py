"""Agent-wide admission of streams: how many may be open, the bytes they may hold, how long they may stall.

gRPC's `max_concurrent_streams` counts per connection, so a client with many connections
got past it; these limits count the whole agent. A stream is open from its first message
and working once its frames flow or its job runs: at most `max_streams` work at once, and
WAITING_FACTOR times as many may be open, since a stream waiting for its header (while the
upstream agent generates) holds nothing but its place. Memory is charged as bytes arrive,
never for what a header announces, and a stream that would take the agent past its budget
is refused (RESOURCE_EXHAUSTED) instead of growing the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TypeVar

from artifex_agent.config import AgentConfig
from artifex_agent.errors import DeadlineError, ResourceError

logger = logging.getLogger(__name__)

MiB = 1 << 20
T = TypeVar("T")
# Open streams allowed per working one.
WAITING_FACTOR = 4


@dataclass(frozen=True)
class Limits:
    """The agent's stream limits (AgentConfig max_streams, stream_memory_mib, stream_idle_s, stream_deadline_s)."""

    max_streams: int
    memory_bytes: int
    idle_s: float
    deadline_s: float

    @classmethod
    def of(cls, cfg: AgentConfig) -> Limits:
        return cls(cfg.max_streams, int(cfg.stream_memory_mib * MiB), cfg.stream_idle_s, cfg.stream_deadline_s)


class Admission:
    """The streams open on this agent and the bytes they hold, across every connection."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        # Tickets are charged from the event loop and from worker threads.
        self._lock = threading.Lock()
        self.streams = 0
        self.working = 0
        self.held = 0

    @contextlib.contextmanager
    def stream(self, method: str) -> Iterator[Ticket]:
        """One open stream's ticket for the duration of the block; ResourceError when too many are open."""
        with self._lock:
            most = WAITING_FACTOR * self.limits.max_streams
            if self.streams >= most:
                raise ResourceError(f"this agent has {self.streams} streams open, its limit ({WAITING_FACTOR} x "
                                    "max_streams); try again when one ends")
            self.streams += 1
        ticket = Ticket(self, method)
        try:
            yield ticket
        finally:
            ticket.close()
            with self._lock:
                self.streams -= 1
                self.working -= ticket.working

    def _begin(self, ticket: Ticket) -> None:
        with self._lock:
            if ticket.working:
                return
            if self.working >= self.limits.max_streams:
                raise ResourceError(f"this agent is at its limit of {self.limits.max_streams} concurrent streams "
                                    "(max_streams); try again when one ends")
            self.working += 1
            ticket.working = True

    def _charge(self, ticket: Ticket, nbytes: int) -> None:
        with self._lock:
            if nbytes > self.limits.memory_bytes:
                raise ResourceError(f"this stream needs {nbytes / MiB:.0f} MiB at once, more than all the stream "
                                    f"memory this agent has ({self.limits.memory_bytes / MiB:.0f} MiB, "
                                    "stream_memory_mib)")
            if nbytes > 0 and self.held + nbytes > self.limits.memory_bytes:
                raise ResourceError(
                    f"this agent's stream memory is full: {self.held / MiB:.0f} of {self.limits.memory_bytes / MiB:.0f}"
                    f" MiB held by {self.streams} open streams (stream_memory_mib); try again later")
            nbytes = max(nbytes, -ticket.held)
            self.held += nbytes
            ticket.held += nbytes


class Ticket:
    """One stream's share of the agent: the bytes it holds, and the timers that end a stalled stream."""

    def __init__(self, admission: Admission, method: str) -> None:
        self.admission = admission
        self.method = method
        self.held = 0
        self.working = False
        self.started = time.monotonic()

    def begin(self) -> None:
        """The stream starts its work (frames flow, its job runs); ResourceError when max_streams already do."""
        self.admission._begin(self)

    def hold(self, nbytes: int) -> None:
        """Charge `nbytes` more to this stream; ResourceError when the agent's budget cannot take them."""
        self.admission._charge(self, nbytes)

    def release(self, nbytes: int) -> None:
        """Give back `nbytes` this stream no longer holds."""
        self.admission._charge(self, -nbytes)

    def close(self) -> None:
        self.release(self.held)

    async def read(self, messages: AsyncIterator[T], what: str, *, idle: bool = True) -> T:
        """The next message (StopAsyncIteration at the end), or DeadlineError when the client stalls.

        `idle`: the client must send within stream_idle_s; without it only the stream's deadline
        applies (waiting for a stream header while the upstream agent is still generating).
        """
        limits = self.admission.limits
        left = self.started + limits.deadline_s - time.monotonic()
        wait = min(limits.idle_s, left) if idle else left
        try:
            async with asyncio.timeout(max(wait, 0.0)):
                return await anext(messages)
        except TimeoutError:
            if wait < left:
                raise DeadlineError(f"no message from the client for {limits.idle_s:g}s while waiting for {what}; "
                                    "the stream was ended (stream_idle_s)") from None
            raise DeadlineError(f"the stream ran past its deadline of {limits.deadline_s:g}s while waiting for "
                                f"{what} (stream_deadline_s)") from None

    async def messages(self, messages: AsyncIterator[T], what: str, *, idle: bool = True) -> AsyncIterator[T]:
        """The rest of the stream through read()."""
        while True:
            try:
                message = await self.read(messages, what, idle=idle)
            except StopAsyncIteration:
                return
            yield message

    async def sending(self, source: AsyncGenerator[T, None]) -> AsyncGenerator[T, None]:
        """Yield from `source`; a client that takes nothing for stream_idle_s has its call cancelled.

        The handler is suspended inside gRPC's send while the client does not read, so no
        timeout of ours can reach it there: the call's task is cancelled instead, which ends
        the call and closes this generator (and whatever `source` holds, a whole clip).
        """
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        async with contextlib.aclosing(source):
            async for item in source:
                timer = loop.call_later(self.admission.limits.idle_s, self._stalled, task)
                try:
                    yield item
                finally:
                    timer.cancel()

    def _stalled(self, task: asyncio.Task[object] | None) -> None:
        logger.info("%s: the client took nothing for %gs; ending the call", self.method,
                    self.admission.limits.idle_s)
        if task is not None:
            task.cancel()

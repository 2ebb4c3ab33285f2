"""Server-Sent Events for the pages: the coordinator's job events, and the agents' cards every few seconds.

One subscription to the coordinator's EventBus per open page (the same bus the gRPC Watch streams read).
A page that falls behind loses progress events, never state changes (EventBus.MAX_BACKLOG). Each stream
starts with a snapshot, so a page that reconnects (the coordinator restarted) catches up without a reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from artifex_agent.coordinator.messages import JobEvent
from artifex_agent.coordinator.scheduler import Scheduler
from artifex_agent.web.views import ProgressBoard, event_view

# How long a browser waits before reconnecting after the stream broke (the SSE `retry:` field).
RETRY_MS = 1000
# Agents' cards go out this often; a comment line this often keeps proxies from closing an idle stream.
AGENTS_EVERY_S = 2.0
# After an event, what else arrives within this long goes out in the same write.
COALESCE_S = 0.05


def sse(event: str, data: Any) -> bytes:
    """One SSE message; JSON never holds a raw newline, so `data:` is one line."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def stream(scheduler: Scheduler, board: ProgressBoard, job_id: str, stopping: asyncio.Event,
                 snapshot: Callable[[], Awaitable[Any]],
                 agents: Callable[[], Any] | None) -> AsyncGenerator[bytes, None]:
    """The stream one page reads: a snapshot, then every event of `job_id` (all jobs when ""), until shutdown.

    With `agents` (the agents page) the agents' cards every AGENTS_EVERY_S and no job events.
    """
    subscription = scheduler.subscribe(job_id) if agents is None else contextlib.nullcontext(asyncio.Queue())
    with subscription as queue:
        stopper = asyncio.ensure_future(stopping.wait())
        getter: asyncio.Future[JobEvent] | None = None
        try:
            yield f"retry: {RETRY_MS}\n\n".encode()
            yield sse("snapshot", await snapshot())
            next_agents = 0.0
            while not stopping.is_set():
                now = time.monotonic()
                if agents is not None and now >= next_agents:
                    yield sse("agents", agents())
                    next_agents = now + AGENTS_EVERY_S
                if queue.empty():
                    getter = asyncio.ensure_future(queue.get())
                    done, _ = await asyncio.wait({getter, stopper}, timeout=AGENTS_EVERY_S,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if getter not in done:
                        getter.cancel()
                        if agents is None:
                            yield b": keep-alive\n\n"  # proxies close a silent stream
                        continue
                    events = [getter.result()]
                    # One write per burst, not per event: each write costs the coordinator about 50 µs per
                    # page; gathering for 50 ms halved what 20 open pages cost per job (bench.web,
                    # docs/benchmarks.md) for updates at most 50 ms later.
                    await asyncio.sleep(COALESCE_S)
                else:
                    events = []
                # What queued meanwhile goes in the same write (a burst of progress events is one chunk).
                while not queue.empty():
                    events.append(queue.get_nowait())
                yield b"".join(sse("job", event_view(e, board, scheduler.bus.previews)) for e in events)
        finally:
            # A page that went away cancels this generator inside the wait: its futures must not outlive it.
            stopper.cancel()
            if getter is not None:
                getter.cancel()

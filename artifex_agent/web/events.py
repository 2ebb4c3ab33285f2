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
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from artifex_agent.coordinator.messages import JobEvent
from artifex_agent.coordinator.previews import PreviewStore
from artifex_agent.coordinator.scheduler import Scheduler
from artifex_agent.web.views import ProgressBoard, event_view

# How long a browser waits before reconnecting after the stream broke (the SSE `retry:` field).
RETRY_MS = 1000
# Agents' cards go out this often; a comment line this often keeps proxies from closing an idle stream.
AGENTS_EVERY_S = 2.0
# After an event, what else arrives within this long goes out in the same write.
COALESCE_S = 0.05


# Each event's message, built once for every open page (20 pages: 20 views and JSON encodings saved).
# Keyed by the event object (the bus hands every subscriber the same one); the newest few are kept.
_MESSAGES: OrderedDict[int, tuple[JobEvent, bytes]] = OrderedDict()
_MESSAGES_KEPT = 256


def job_message(event: JobEvent, board: ProgressBoard, previews: PreviewStore) -> bytes:
    """The `job` SSE message for one event, the same bytes for every page that sends it."""
    kept = _MESSAGES.get(id(event))
    if kept is not None and kept[0] is event:
        return kept[1]
    message = sse("job", event_view(event, board, previews))
    _MESSAGES[id(event)] = (event, message)
    while len(_MESSAGES) > _MESSAGES_KEPT:
        _MESSAGES.popitem(last=False)
    return message


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
                # A Submit or dispatch pass in flight goes first (coordinator/urgency.py); what queued
                # meanwhile goes in the same write (a burst of progress events is one chunk).
                await scheduler.urgency.calm()
                while not queue.empty():
                    events.append(queue.get_nowait())
                yield b"".join(job_message(e, board, scheduler.bus.previews) for e in events)
        finally:
            # A page that went away cancels this generator inside the wait: its futures must not outlive it.
            stopper.cancel()
            if getter is not None:
                getter.cancel()

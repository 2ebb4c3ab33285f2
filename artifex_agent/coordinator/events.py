"""In-process fan-out of job events to Watch streams."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from artifex_agent.coordinator.messages import JobEvent

logger = logging.getLogger(__name__)

# A watcher this far behind loses progress events (never state changes) until it catches up.
MAX_BACKLOG = 1000


class EventBus:
    """Publishes events to every subscriber of that job (or of all jobs)."""

    def __init__(self) -> None:
        self._subs: dict[int, tuple[str, asyncio.Queue[JobEvent]]] = {}
        self._next = 0

    @contextlib.contextmanager
    def subscribe(self, job_id: str = "") -> Iterator[asyncio.Queue[JobEvent]]:
        """A queue receiving `job_id`'s events (every job's when empty) while the block runs."""
        key = self._next
        self._next += 1
        queue: asyncio.Queue[JobEvent] = asyncio.Queue()
        self._subs[key] = (job_id, queue)
        try:
            yield queue
        finally:
            del self._subs[key]

    def publish(self, event: JobEvent) -> None:
        for job_id, queue in self._subs.values():
            if job_id and job_id != event.job_id:
                continue
            if event.kind == "progress" and queue.qsize() >= MAX_BACKLOG:
                continue
            queue.put_nowait(event)

    @property
    def watchers(self) -> int:
        return len(self._subs)

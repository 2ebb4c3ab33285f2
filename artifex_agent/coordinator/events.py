"""In-process fan-out of job events to Watch streams, keeping each running job's newest preview."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Iterator

from artifex_agent.coordinator.messages import JobEvent
from artifex_agent.coordinator.previews import PreviewStore

logger = logging.getLogger(__name__)

# A watcher this far behind loses progress events (never state changes) until it catches up.
MAX_BACKLOG = 1000
# A watcher this far behind gets progress events without their preview: the next one supersedes it anyway,
# and a slow reader must not hold a backlog of pictures (up to PreviewStore.max_bytes each) in memory.
PREVIEW_BACKLOG = 4


class EventBus:
    """Publishes events to every subscriber of that job (or of all jobs)."""

    def __init__(self, previews: PreviewStore | None = None) -> None:
        self._subs: dict[int, tuple[str, asyncio.Queue[JobEvent]]] = {}
        self._next = 0
        # Retained, like a last-value cache: a watcher that joins late is shown the newest at once.
        self.previews = previews if previews is not None else PreviewStore()

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
        event = self._retain(event)
        bare = without_preview(event) if event.preview else event
        for job_id, queue in self._subs.values():
            if job_id and job_id != event.job_id:
                continue
            if event.kind == "progress" and queue.qsize() >= MAX_BACKLOG:
                continue
            queue.put_nowait(bare if queue.qsize() >= PREVIEW_BACKLOG else event)

    def with_preview(self, event: JobEvent) -> JobEvent:
        """`event` carrying the job's newest preview (for a snapshot); unchanged when there is none."""
        preview = self.previews.get(event.job_id)
        if preview is None:
            return event
        return dataclasses.replace(event, preview=preview.data, preview_mime=preview.mime, preview_step=preview.step)

    def _retain(self, event: JobEvent) -> JobEvent:
        """Keep a progress event's preview as the job's newest (one too big goes nowhere); a job that stops
        running (ends, or goes back to the queue) drops its own."""
        if event.preview:
            if self.previews.put(event.job_id, event.preview, event.preview_mime, event.preview_step) is None:
                return without_preview(event)
        elif event.kind != "progress" and event.state != "running":
            self.previews.drop(event.job_id)
        return event

    @property
    def watchers(self) -> int:
        return len(self._subs)


def without_preview(event: JobEvent) -> JobEvent:
    return dataclasses.replace(event, preview=b"", preview_mime="", preview_step=0)

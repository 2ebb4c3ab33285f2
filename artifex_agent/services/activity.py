"""What this agent is doing right now: streams in flight, for Info, metrics and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from artifex_agent import logs


@dataclass
class Activity:
    """Counts the streams in flight, for the Info reply and the metrics."""

    active: dict[int, tuple[str, str, float]] = field(default_factory=dict)
    # Where finished stages and streamed frames are reported (a metrics.Metrics); None: nowhere.
    metrics: Any = None
    _next: int = 0

    @contextlib.contextmanager
    def track(self, stage: str, job_id: str = "") -> Iterator[None]:
        """One stream in flight; its log lines carry `job_id`, its duration goes to the metrics."""
        key = self._next
        self._next += 1
        self.active[key] = (stage, job_id, time.time())
        started = time.monotonic()
        token = logs.set_job(job_id) if job_id else None
        outcome = "error"
        try:
            yield
            outcome = "ok"
        except (GeneratorExit, asyncio.CancelledError):
            # The client went away or the server is stopping: not the stage's failure.
            outcome = "cancelled"
            raise
        finally:
            del self.active[key]
            if self.metrics is not None:
                self.metrics.observe_stage(stage, time.monotonic() - started, outcome)
            if token is not None:
                logs.reset_job(token)

    def count_frames(self, direction: str, frames: int, nbytes: int) -> None:
        """Frames and payload bytes that crossed the link ("sent" or "received")."""
        if self.metrics is not None:
            self.metrics.count_frames(direction, frames, nbytes)

    @property
    def count(self) -> int:
        return len(self.active)

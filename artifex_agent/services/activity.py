"""What this agent is doing right now: streams in flight, for Info, metrics and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class Activity:
    """Counts the streams in flight and lets shutdown wait for them."""

    active: dict[int, tuple[str, str, float]] = field(default_factory=dict)
    _next: int = 0
    _idle: asyncio.Event | None = None

    @contextlib.contextmanager
    def track(self, stage: str, job_id: str = "") -> Iterator[None]:
        key = self._next
        self._next += 1
        self.active[key] = (stage, job_id, time.time())
        if self._idle is not None:
            self._idle.clear()
        try:
            yield
        finally:
            del self.active[key]
            if not self.active and self._idle is not None:
                self._idle.set()

    @property
    def count(self) -> int:
        return len(self.active)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no stream is in flight; False if `timeout` passed first."""
        if not self.active:
            return True
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

"""Scheduling comes first: page work waits while a Submit or a dispatch pass is in flight.

The web page shares the coordinator's event loop (web/). A queue page render or a burst of event-stream
writes that happens to run while a Submit is being stored and dispatched used to delay that job's start
by the page's whole cost, and held the GIL the store's thread needed to finish its commit (bench.web:
submit -> start p99 2.4x with 20 pages open). Page work now asks `calm()` first and between slices.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

# Page work waits at most this long for the scheduler: a dispatch pass that hangs on something must not
# freeze the pages.
CALM_WAIT_S = 0.05


class Urgency:
    """Counts scheduling work in flight; `calm()` returns when there is none (or after CALM_WAIT_S)."""

    def __init__(self) -> None:
        self._in_flight = 0
        self._dispatch_due = False
        self._calm = asyncio.Event()
        self._calm.set()

    @contextlib.contextmanager
    def urgent(self) -> Iterator[None]:
        """Mark a Submit or a dispatch pass as in flight for its duration."""
        self._in_flight += 1
        self._calm.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            self._settle()

    def dispatch_due(self) -> None:
        """The scheduler was woken: a dispatch pass is coming, page work waits for it too."""
        self._dispatch_due = True
        self._calm.clear()

    @contextlib.contextmanager
    def dispatching(self) -> Iterator[None]:
        """A dispatch pass: urgent while it runs, and the pass the last wake asked for is no longer due."""
        with self.urgent():
            self._dispatch_due = False
            yield

    def stand_down(self) -> None:
        """No pass will come (the scheduler stopped): pages need not wait for one."""
        self._dispatch_due = False
        self._settle()

    def _settle(self) -> None:
        if not self._in_flight and not self._dispatch_due:
            self._calm.set()

    @property
    def is_calm(self) -> bool:
        return self._calm.is_set()

    async def calm(self, limit_s: float | None = None) -> bool:
        """Wait until no scheduling work is in flight, at most `limit_s` (CALM_WAIT_S); False when it ran out."""
        limit_s = CALM_WAIT_S if limit_s is None else limit_s
        # First let what is already waiting on the loop run: a Submit that just arrived marks itself urgent
        # in its first step, which would otherwise come after every page that woke with it.
        await asyncio.sleep(0)
        if self._calm.is_set():
            return True
        try:
            await asyncio.wait_for(self._calm.wait(), limit_s)
        except TimeoutError:
            return False
        return True

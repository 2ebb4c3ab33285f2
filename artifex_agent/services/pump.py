"""One engine call in a worker thread, its messages pumped to the async stream that asked for it.

Torch runs off the event loop; what the worker emits (progress, a CFG half's predictions)
reaches the handler in order, and a client that goes away sets `cancel`, which the engines
check between denoising steps, so the GPU is free soon after.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import Executor
from typing import Any, Generic, TypeVar

from artifex_agent.engines.eta import EtaClock
from artifex_agent.engines.previews import Preview
from artifex_agent.errors import ArtifexError
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.transport import wire
from artifex_agent.vocabulary import Stage
from artifex_agent.wire_enums import stage_to_pb

logger = logging.getLogger(__name__)
T = TypeVar("T")


class Pump(Generic[T]):
    """A job's worker thread and its async handler (create it on the event loop)."""

    def __init__(self, started: float | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.started = time.monotonic() if started is None else started
        self.cancel = threading.Event()
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._future: asyncio.Future[T] | None = None
        # Seconds left for this agent's part: the steps alone, unless the handler knows the work after them.
        self.eta: EtaClock | None = EtaClock()
        self._last = (0, 0, 0.0)  # the latest step, total and eta_s, which previews travel beside

    def emit(self, message: bytes) -> None:
        """Send `message` from the worker (thread-safe); dropped once the handler is gone."""
        try:
            self.loop.call_soon_threadsafe(self._outbox.put_nowait, message)
        except RuntimeError:  # the event loop closed under a cancelled call
            pass

    def progress(self, stage: Stage, step: int = 0, total: int = 0, message: str = "", **extra: Any) -> None:
        """Emit a Progress event, timed from `started`; `extra`: more Progress fields (eta_s, preview...)."""
        # Progress is field 1 of GenerateEvent, DenoiseEvent and CfgEvent alike.
        self.emit(wire.encode_progress(pb.Progress(current_stage=stage_to_pb(stage), step=step, total=total,
                                                   message=message, elapsed_s=time.monotonic() - self.started,
                                                   **extra)))

    def on_step(self, step: int, total: int, message: str = "") -> None:
        """A denoising step done: the engines' step callback."""
        eta_s = self.eta.step(step, total) if self.eta is not None else 0.0
        self._last = (step, total, eta_s)
        self.progress("denoise", step, total, message, eta_s=eta_s)

    def on_preview(self, preview: Preview) -> None:
        """A preview encoded (from the previews thread): a Progress event beside the latest step."""
        step, total, eta_s = self._last
        self.progress("denoise", max(step, preview.step), total or preview.total, eta_s=eta_s,
                      preview=preview.data, preview_mime=preview.mime, preview_step=preview.step)

    async def run(self, executor: Executor, work: Callable[[], T]) -> AsyncGenerator[bytes, None]:
        """Start `work` in `executor` and yield what it emits until it ends; then `result()` has its outcome.

        Close this generator promptly (contextlib.aclosing): closing it is what cancels the work.
        """
        # The copied context carries the job id into the worker's log lines (executors drop it).
        future = self._future = self.loop.run_in_executor(executor, contextvars.copy_context().run, work)
        getter: asyncio.Future[bytes] | None = None
        try:
            while not future.done():
                getter = asyncio.ensure_future(self._outbox.get())
                waiting: set[asyncio.Future[Any]] = {getter, future}
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield getter.result()
                else:
                    getter.cancel()  # now, before it can take a message that the loop below yields
            while not self._outbox.empty():
                yield self._outbox.get_nowait()
        finally:
            if getter is not None:
                getter.cancel()  # the handler was closed while waiting
            # The client went away (or we failed): stop between steps and free the engine.
            self.cancel.set()
            if not future.done():
                # Nobody will ask for its result now: take it when the work stops, or asyncio logs
                # "Future exception was never retrieved" with a traceback for an ordinary cancel.
                future.add_done_callback(_abandoned)

    def result(self) -> T:
        """The work's return value, or its exception raised here."""
        assert self._future is not None and self._future.done(), "result() before run() ended"
        return self._future.result()


def _abandoned(future: asyncio.Future[Any]) -> None:
    """The end of work whose stream was closed first: expected errors (a cancel) quietly, others in full."""
    if future.cancelled():
        return
    exc = future.exception()
    if exc is None or isinstance(exc, ArtifexError):
        logger.debug("work ended after its stream closed: %s", exc or "ok")
    else:
        logger.error("work failed after its stream closed", exc_info=exc)

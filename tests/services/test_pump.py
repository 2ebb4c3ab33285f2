"""Pump: a worker thread's messages reach the async stream in order; closing the stream cancels the work."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from artifex_agent import logs
from artifex_agent.errors import StreamError
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.services.pump import Pump


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=1)
    yield pool
    pool.shutdown(wait=True)


def _progress(raw: bytes) -> pb.Progress:
    # Progress is field 1 of GenerateEvent, as of the split events.
    return pb.GenerateEvent.FromString(raw).progress


def test_messages_arrive_in_order_then_the_result(executor: ThreadPoolExecutor) -> None:
    async def main() -> tuple[list[bytes], str]:
        pump: Pump[str] = Pump()

        def work() -> str:
            for i in range(200):
                pump.emit(f"m{i}".encode())
            return "done"

        async with contextlib.aclosing(pump.run(executor, work)) as events:
            got = [event async for event in events]
        return got, pump.result()

    got, result = asyncio.run(main())
    assert got == [f"m{i}".encode() for i in range(200)]
    assert result == "done"


def test_steps_are_denoise_progress_timed_from_the_start(executor: ThreadPoolExecutor) -> None:
    async def main() -> list[pb.Progress]:
        pump: Pump[None] = Pump(started=0.0)

        def work() -> None:
            pump.on_step(1, 4, "steps 1..4 of 4")
            pump.on_step(2, 4)

        async with contextlib.aclosing(pump.run(executor, work)) as events:
            return [_progress(event) async for event in events]

    first, second = asyncio.run(main())
    assert (first.current_stage, first.step, first.total, first.message) == (pb.STAGE_DENOISE, 1, 4, "steps 1..4 of 4")
    assert (second.current_stage, second.step, second.message) == (pb.STAGE_DENOISE, 2, "")
    assert first.elapsed_s > 0  # monotonic time since 0.0, not since the call


def test_a_failure_comes_after_what_the_worker_sent(executor: ThreadPoolExecutor) -> None:
    async def main() -> list[bytes]:
        pump: Pump[None] = Pump()

        def work() -> None:
            pump.emit(b"before")
            raise StreamError("the peer went away")

        async with contextlib.aclosing(pump.run(executor, work)) as events:
            got = [event async for event in events]
        with pytest.raises(StreamError, match="the peer went away"):
            pump.result()
        return got

    assert asyncio.run(main()) == [b"before"]


def test_closing_the_stream_cancels_the_work(executor: ThreadPoolExecutor) -> None:
    stopped = threading.Event()

    async def main() -> bool:
        pump: Pump[None] = Pump()

        def work() -> None:
            # An engine between steps: it goes on until told to stop.
            while not pump.cancel.wait(0.01):
                pump.emit(b"step")
            stopped.set()

        async with contextlib.aclosing(pump.run(executor, work)) as events:
            async for _ in events:
                break  # the client went away after one message
        cancelled = pump.cancel.is_set()
        pump.cancel.set()  # so that a failing run still lets the worker (and the test) end
        return cancelled

    assert asyncio.run(main())
    assert stopped.wait(5)


def test_the_worker_logs_under_the_callers_job_id(executor: ThreadPoolExecutor) -> None:
    async def main() -> str:
        pump: Pump[str] = Pump()
        with logs.job("job-42"):
            async with contextlib.aclosing(pump.run(executor, logs.job_id_var.get)) as events:
                async for _ in events:
                    pass
        return pump.result()

    # Executors drop context variables; the pump copies them, so the engine's log lines name the job.
    assert asyncio.run(main()) == "job-42"

"""Scheduling comes first (coordinator/urgency.py): page work waits while a Submit or a dispatch pass is in flight."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from artifex_agent.coordinator.jobs import JobQueue
from artifex_agent.coordinator.urgency import Urgency
from artifex_agent.jobspec import JobSpec
from tests.web.pages import bare_cluster, open_scheduler


async def _done_after(awaitable: asyncio.Future[bool] | asyncio.Task[bool], seconds: float) -> bool:
    await asyncio.sleep(seconds)
    return awaitable.done()


def test_calm_waits_for_urgent_work_and_a_due_dispatch_pass_and_gives_up_at_its_limit() -> None:
    async def scenario() -> None:
        urgency = Urgency()
        assert await urgency.calm() is True  # nothing in flight: at once
        with urgency.urgent():
            waiter = asyncio.create_task(urgency.calm(limit_s=5.0))
            assert not await _done_after(waiter, 0.02)
            with urgency.urgent():  # nested work: still not calm when the inner one ends
                pass
            assert not await _done_after(waiter, 0.01)
        assert await waiter is True
        # Woken: the pass that is coming counts, from the wake to the end of the pass.
        urgency.dispatch_due()
        waiter = asyncio.create_task(urgency.calm(limit_s=5.0))
        assert not await _done_after(waiter, 0.02)
        with urgency.dispatching():
            assert not await _done_after(waiter, 0.01)
        assert await waiter is True and urgency.is_calm
        urgency.dispatch_due()
        urgency.stand_down()  # the scheduler stopped: no pass is coming
        assert urgency.is_calm
        # A scheduler stuck on something does not freeze the pages: they go on after the limit.
        with urgency.urgent():
            t0 = time.monotonic()
            assert await urgency.calm(limit_s=0.05) is False
            assert 0.04 <= time.monotonic() - t0 < 1.0

    asyncio.run(scenario())


def test_page_work_waits_for_a_submit_and_its_dispatch_pass(tmp_path: Path) -> None:
    async def scenario() -> None:
        scheduler = open_scheduler(bare_cluster(tmp_path))
        queue = JobQueue(scheduler)
        await scheduler.start()  # its one agent never answers: the job stays queued, the passes still run
        try:
            order: list[str] = []

            async def page() -> None:
                await asyncio.sleep(0)  # arrives right after the Submit began
                assert await scheduler.urgency.calm(limit_s=5.0)
                order.append("page")

            async def submit() -> None:
                await queue.submit(JobSpec(prompts=["first"], width=64, height=64, frames=5))
                order.append("submit")

            await asyncio.gather(submit(), page())
            assert order == ["submit", "page"]
            assert scheduler.urgency.is_calm  # and once the pass the Submit asked for has run
        finally:
            await scheduler.drain(1.0)
            await scheduler.close()
        # A stopped scheduler never leaves pages waiting for a pass that will not come.
        scheduler.wake()
        assert scheduler.urgency.is_calm

    asyncio.run(scenario())


def test_a_scheduler_that_never_started_does_not_hold_pages(tmp_path: Path) -> None:
    async def scenario() -> None:
        scheduler = open_scheduler(bare_cluster(tmp_path))
        await JobQueue(scheduler).submit(JobSpec(prompts=["queued"], width=64, height=64, frames=5))
        assert scheduler.urgency.is_calm
        scheduler.store.close()

    asyncio.run(scenario())

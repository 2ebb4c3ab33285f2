"""Raising a queued job's priority: JobQueue.set_priority, the one method the page (and any client) calls."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from artifex_agent.coordinator.batching import QueueEntry
from artifex_agent.coordinator.jobs import JobQueue
from artifex_agent.coordinator.store import Store
from artifex_agent.errors import ArtifexError, RequestError
from artifex_agent.jobspec import JobSpec
from tests.web.pages import bare_cluster, open_scheduler


def test_a_raised_priority_reorders_the_queue_and_survives_a_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        scheduler = open_scheduler(bare_cluster(tmp_path))
        store = scheduler.store
        queue = JobQueue(scheduler)
        spec = JobSpec(prompts=["x"], width=64, height=64, frames=5)
        first, _ = await queue.submit(spec)
        second, _ = await queue.submit(JobSpec(prompts=["y"], width=64, height=64, frames=5))
        with scheduler.subscribe(second.id) as events:
            raised = await queue.set_priority(second.id, 5)
            event = events.get_nowait()
        assert raised.spec.priority == 5 and event.kind == "info" and "priority set to 5" in event.message
        order = [e.job.id for e in sorted(scheduler.entries.values(), key=QueueEntry.order)]
        assert order == [second.id, first.id]
        with pytest.raises(RequestError, match="priority must be within"):
            await queue.set_priority(first.id, 10**6)
        await queue.cancel(first.id)
        with pytest.raises(ArtifexError, match="only a queued job's priority can change"):
            await queue.set_priority(first.id, 2)
        assert (await queue.get(first.id)).spec.priority == 0
        await scheduler.call(store.close)

    asyncio.run(scenario())
    # A restarted coordinator reads the queue in the new order, with the new priority in the spec.
    store = Store(tmp_path / "jobs.db").open()
    queued = store.queued()
    assert [(job.spec.prompts, job.spec.priority) for job, *_ in queued] == [(["y"], 5)]
    assert [e.message for e in store.events(queued[0][0].id)][-1] == "priority set to 5"
    store.close()

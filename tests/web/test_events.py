"""The pages' event stream: a snapshot, then the coordinator's job events, ended by shutdown."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from artifex_agent.coordinator.jobs import JobQueue
from artifex_agent.coordinator.messages import JobEvent
from artifex_agent.jobspec import JobSpec
from artifex_agent.web import events
from artifex_agent.web.views import ProgressBoard
from tests.web.pages import bare_cluster, open_scheduler


def parse(chunk: bytes) -> list[tuple[str, Any]]:
    out = []
    for block in chunk.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in fields:
            out.append((fields["event"], json.loads(fields["data"])))
    return out


def test_a_page_gets_a_snapshot_then_live_events_and_the_stream_ends_at_shutdown(tmp_path: Path) -> None:
    async def scenario() -> None:
        scheduler = open_scheduler(bare_cluster(tmp_path))
        store = scheduler.store
        queue = JobQueue(scheduler)
        board, stopping = ProgressBoard(), asyncio.Event()
        follower = asyncio.create_task(board.follow(scheduler))
        first, _ = await queue.submit(JobSpec(prompts=["one"], width=64, height=64, frames=5))

        async def snapshot() -> Any:
            return [first.id]

        stream = events.stream(scheduler, board, "", stopping, snapshot, None)
        assert (await anext(stream)).startswith(b"retry: ")
        assert parse(await anext(stream)) == [("snapshot", [first.id])]
        second, _ = await queue.submit(JobSpec(prompts=["two"], width=64, height=64, frames=5))
        # Agents report progress (the scheduler publishes it on the same bus): a burst arrives as one write.
        for step in (1, 2):
            scheduler.bus.publish(JobEvent(second.id, "progress", "running", stage="generating", step=step,
                                           total=4, time=100.0 + step))
        got = parse(await anext(stream))
        assert got[0][0] == "job" and got[0][1]["job"]["id"] == second.id and got[0][1]["state"] == "queued"
        got += parse(await anext(stream)) if len(got) < 3 else []
        progress = [data for kind, data in got if data["kind"] == "progress"]
        assert [p["percent"] for p in progress] == [25.0, 50.0]
        await asyncio.sleep(0)
        assert board.jobs[second.id].step == 2  # a page loaded now starts its bar there
        await queue.cancel(second.id)
        cancelled = parse(await anext(stream))
        assert cancelled[0][1]["state"] == "cancelled" and cancelled[0][1]["job"]["terminal"]
        stopping.set()
        async with asyncio.timeout(1.0):
            assert [chunk async for chunk in stream] == []
        assert scheduler.bus.watchers == 1  # the board only: the page's subscription is gone
        follower.cancel()
        store.close()

    asyncio.run(scenario())


def test_the_agents_page_stream_sends_cards_and_no_job_events(tmp_path: Path) -> None:
    async def scenario() -> None:
        scheduler = open_scheduler(bare_cluster(tmp_path))
        store = scheduler.store

        async def snapshot() -> Any:
            return []

        stream = events.stream(scheduler, ProgressBoard(), "", asyncio.Event(), snapshot, lambda: [{"name": "a"}])
        await anext(stream)
        await anext(stream)
        assert parse(await anext(stream)) == [("agents", [{"name": "a"}])]
        assert scheduler.bus.watchers == 0
        await stream.aclose()
        store.close()

    asyncio.run(scenario())


def test_a_page_that_goes_away_leaves_no_task_behind(tmp_path: Path) -> None:
    async def scenario() -> None:
        scheduler = open_scheduler(bare_cluster(tmp_path))

        async def snapshot() -> Any:
            return []

        stream = events.stream(scheduler, ProgressBoard(), "", asyncio.Event(), snapshot, None)
        await anext(stream)
        await anext(stream)
        waiting = asyncio.create_task(anext(stream))  # the page is idle: the stream waits for an event
        await asyncio.sleep(0.05)
        waiting.cancel()  # the browser closed the tab: the server cancels the response
        await asyncio.gather(waiting, return_exceptions=True)
        await stream.aclose()
        await asyncio.sleep(0)
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
        assert left == [] and scheduler.bus.watchers == 0
        scheduler.store.close()

    asyncio.run(scenario())

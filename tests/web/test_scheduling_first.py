"""The page shares the coordinator's loop without slowing its scheduling (bench.web measures the figure):
requests wait for a Submit in flight, pages render in slices, each event's message is built once, the
queue page reads the store without the database thread."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from artifex_agent.config import ClusterConfig
from artifex_agent.coordinator import urgency
from artifex_agent.coordinator.job import Job
from artifex_agent.coordinator.jobs import JobQueue
from artifex_agent.coordinator.messages import JobEvent
from artifex_agent.coordinator.store import Store
from artifex_agent.jobspec import JobSpec
from artifex_agent.web import app as web_app
from artifex_agent.web import events
from artifex_agent.web.app import Web, create_app
from artifex_agent.web.views import ProgressBoard
from tests.web.pages import open_scheduler


def _finished(store: Store, n: int) -> None:
    for i in range(n):
        spec = JobSpec(prompts=[f"finished {i}: <b>a fox</b>"], width=64, height=64, frames=5, steps=1, seed=i)
        job = Job.submitted(f"job{i:04d}", spec, 1000.0 + i)
        store.insert(job, spec.content_key(), JobEvent(job.id, "state", "queued", stage="queued", time=1000.0 + i))
        job.start("a", "a", "", 1001.0 + i)
        job.finish([f"/nowhere/{job.id}.mp4"], ["0" * 64], 1002.0 + i)
        store.save(job, JobEvent(job.id, "state", "done", stage="done", time=1002.0 + i))


@asynccontextmanager
async def _web(tmp: Path, finished: int = 0) -> AsyncIterator[tuple[Web, Any]]:
    """The app over a fresh store, no password (loopback), `finished` done jobs in it."""
    cluster = ClusterConfig.from_dict({
        "coordinator": {"database": str(tmp / "jobs.db"), "results_cache": str(tmp / "cache")},
        "web": {"listen": ""}, "agents": {"a": {"address": "127.0.0.1:1"}}})
    scheduler = open_scheduler(cluster)
    _finished(scheduler.store, finished)
    web = Web.build(cluster, JobQueue(scheduler), "")
    try:
        yield web, create_app(web)
    finally:
        scheduler.store.close()


async def _get(app: Any, path: str) -> tuple[int, bytes, int]:
    """GET through the ASGI app on this loop: (status, body, how many body messages it came in)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1:8265")], "client": ("127.0.0.1", 50000),
             "server": ("127.0.0.1", 8265)}
    sent = False
    status, parts = 0, []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body" and message.get("body"):
            parts.append(message["body"])

    await app(scope, receive, send)
    return status, b"".join(parts), len(parts)


@contextmanager
def _slices(monkeypatch: pytest.MonkeyPatch, seconds: float) -> Iterator[None]:
    with monkeypatch.context() as m:
        m.setattr(web_app, "RENDER_SLICE_S", seconds)
        yield


def test_a_request_waits_for_a_submit_in_flight_before_any_page_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A page waits 50 ms at most: longer here, so a slow moment of a loaded machine cannot end the wait early.
    monkeypatch.setattr(urgency, "CALM_WAIT_S", 10.0)

    async def scenario() -> None:
        async with _web(tmp_path, finished=3) as (web, app):
            with web.urgency.urgent():  # a Submit being stored
                page = asyncio.create_task(_get(app, "/"))
                await asyncio.sleep(0.05)
                assert not page.done()
            status, body, _ = await asyncio.wait_for(page, 5.0)
            assert status == 200 and b"job0002" in body

    asyncio.run(scenario())


def test_the_queue_page_renders_in_slices_that_let_the_loop_run_and_reads_the_same_html(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        async with _web(tmp_path, finished=40) as (_, app):
            with _slices(monkeypatch, 60.0):
                _, whole, pieces = await _get(app, "/")
            assert pieces == 1
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0)

            other = asyncio.create_task(ticker())
            with _slices(monkeypatch, 0.0):  # every piece its own slice
                status, sliced, pieces = await _get(app, "/")
            other.cancel()
            assert status == 200 and sliced == whole
            assert pieces > 40 and ticks >= pieces - 1  # the loop ran other work between the slices
            # Escaped as before: the prompt's markup is text.
            assert b"&lt;b&gt;a fox&lt;/b&gt;" in whole and b"<b>a fox</b>" not in whole

    asyncio.run(scenario())


def test_each_event_message_is_built_once_for_every_page(tmp_path: Path) -> None:
    board = ProgressBoard()
    first = JobEvent("j1", "progress", "running", stage="denoise", step=1, total=4, time=1.0)
    second = JobEvent("j1", "progress", "running", stage="denoise", step=2, total=4, time=2.0)
    from artifex_agent.coordinator.previews import PreviewStore

    previews = PreviewStore()
    message = events.job_message(first, board, previews)
    assert events.job_message(first, board, previews) is message  # the second page gets the same bytes
    assert b'"step":1' in message and b"event: job\n" in message
    assert b'"step":2' in events.job_message(second, board, previews)
    # An equal but different event (a later one with the same fields) is its own message.
    again = JobEvent("j1", "progress", "running", stage="denoise", step=1, total=4, time=1.0)
    assert events.job_message(again, board, previews) is not message


def test_the_loop_reads_pages_through_its_own_connection_and_sees_every_commit(tmp_path: Path) -> None:
    store = Store(tmp_path / "a #1 ?100%" / "jobs.db").open()  # characters a URI would read otherwise
    try:
        assert store.reads_on_loop  # WAL on a local disk
        _finished(store, 5)
        assert [(s, j.id) for s, j in store.read_page(None, 3)] == [(s, j.id) for s, j in store.page(None, 3)]
        assert [j.id for _, j in store.read_page(["done"], 10)] == [f"job{i:04d}" for i in range(4, -1, -1)]
        # A job the writing connection commits is on the next page read at once.
        spec = JobSpec(prompts=["new"], width=64, height=64, frames=5, steps=1)
        job = Job.submitted("newest", spec, 2000.0)
        store.insert(job, spec.content_key(), JobEvent(job.id, "state", "queued", stage="queued", time=2000.0))
        newest = store.read_page(None, 1)[0][1]
        assert newest.id == "newest" and newest.state == "queued" and newest.spec.prompts == ["new"]
    finally:
        store.close()

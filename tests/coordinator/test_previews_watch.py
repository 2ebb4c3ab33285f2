"""Live previews through the coordinator: carried by Watch, the newest kept for late joiners, never stored."""

from __future__ import annotations

import asyncio
import io
import sqlite3
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from PIL import Image

from artifex_agent.cli.main import main
from artifex_agent.client import AsyncJobsClient, JobEvent
from artifex_agent.coordinator.events import PREVIEW_BACKLOG, EventBus
from artifex_agent.coordinator.jobs import JobQueue
from artifex_agent.coordinator.previews import PreviewStore
from artifex_agent.coordinator.service import JobsService
from artifex_agent.engines.previews import cell_size, frames_shown, preview_size
from artifex_agent.jobspec import JobSpec
from artifex_agent.local_cluster import DEMO_MODEL
from artifex_agent.transport.methods import jobs_handlers
from tests.coordinator.conftest import Coordinator, spec
from tests.web.pages import bare_cluster, open_scheduler


def webp(shade: int, frames: int = 3) -> bytes:
    out = io.BytesIO()
    images = [Image.new("RGB", (24, 16), (shade, i * 40, 0)) for i in range(frames)]
    images[0].save(out, "WEBP", save_all=True, append_images=images[1:], duration=100, loop=0)
    return out.getvalue()


def decodes(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.size


def test_previews_arrive_in_watch_and_never_reach_the_job_store(coordinator: Coordinator, tmp_path: Path) -> None:
    with coordinator.client() as client:
        coordinator.wait_for_agents(client)
        job_id = client.submit(spec("a fox with previews", width=32, height=32, steps=6, preview_every=2))
        previews: list[JobEvent] = []
        for event in client.watch(job_id, timeout=60):
            if event.preview:
                previews.append(event)
            if event.kind == "state" and event.state in ("done", "failed", "cancelled"):
                assert event.state == "done", event.message
        # Every preview the agent made passes the throttle that thins step events (the agent itself skips
        # due steps within a quarter second of its last preview, but never its last step).
        steps = [e.preview_step for e in previews]
        assert steps[-1] == 6 and set(steps) <= {2, 4, 6} and steps == sorted(set(steps)), steps
        for event in previews:
            assert event.kind == "progress" and event.preview_mime in ("image/webp", "image/jpeg")
            assert decodes(event.preview) == preview_size(32, 32, frames_shown(2))  # 5 frames: 2 latent ones
        # Once it ended its preview is gone: a watcher now gets the final snapshot without one.
        (snapshot,) = list(client.watch(job_id, timeout=10))
        assert snapshot.snapshot and snapshot.state == "done" and not snapshot.preview
        # A job without preview_every sends none.
        plain = client.submit(spec("a fox without previews", width=32, height=32, steps=2))
        assert not any(e.preview for e in client.watch(plain, timeout=60))
    assert coordinator.stop() == 0
    # Not in the database (nor its WAL): neither the bytes nor a column or table for them.
    database = Path(coordinator.workdir / "jobs.db")
    stored = b"".join(p.read_bytes() for p in database.parent.glob("jobs.db*"))
    for event in previews:
        assert event.preview[-64:] not in stored
    assert b"WEBP" not in stored and b"\xff\xd8\xff" not in stored
    with sqlite3.connect(database) as db:
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        columns = [c[1] for t in tables for c in db.execute(f"PRAGMA table_info({t})")]
    assert not [name for name in tables + columns if "preview" in name.lower()]


def test_submit_wait_preview_keeps_an_animated_webp_at_the_path(coordinator: Coordinator, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with coordinator.client() as client:
        coordinator.wait_for_agents(client)
    target = tmp_path / "fox.webp"
    code = main(["submit", "--config", str(coordinator.config), "a fox seen live", "--model", DEMO_MODEL,
                 "--size", "32x32", "--frames", "9", "--steps", "4", "--guidance", "1", "--wait", "--no-progress",
                 "--preview", str(target), "--preview-every", "2"])
    assert code == 0, capsys.readouterr().err
    with Image.open(target) as image:
        # 9 frames are 3 latent ones: three frames spread over the clip, as a loop.
        assert image.format == "WEBP" and image.size == cell_size(32, 32, 3)
        assert getattr(image, "n_frames", 1) == frames_shown(3) == 3
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_a_watcher_joining_a_running_job_sees_its_preview_at_once(coordinator: Coordinator) -> None:
    with coordinator.client() as client, coordinator.client() as late:
        coordinator.wait_for_agents(client)
        job_id = client.submit(spec("a fox joined late", width=32, height=32, steps=80, preview_every=1))
        first = next(e for e in client.watch(job_id, timeout=60) if e.preview)
        snapshot = next(iter(late.watch(job_id, timeout=30)))
        assert snapshot.snapshot and snapshot.state == "running", "the job ended too soon for this test"
        assert snapshot.preview_step >= first.preview_step
        assert decodes(snapshot.preview) == preview_size(32, 32, frames_shown(2))
        client.cancel(job_id)


def test_a_late_watcher_gets_the_newest_preview_with_the_snapshot(tmp_path: Path) -> None:
    """The real Jobs service over a real channel; the agent's side is the scheduler's bus, fed directly."""

    async def scenario() -> None:
        scheduler = open_scheduler(bare_cluster(tmp_path))
        queue = JobQueue(scheduler)
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(jobs_handlers(JobsService(queue)))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            job, _ = await queue.submit(JobSpec(prompts=["late"], width=64, height=64, frames=5))
            scheduler.entries[job.id].job.start("a", "a", "", time.time())
            for step, shade in ((2, 10), (4, 200)):
                scheduler.bus.publish(JobEvent(job.id, "progress", "running", stage="denoise", step=step, total=8,
                                               time=time.time(), preview=webp(shade), preview_mime="image/webp",
                                               preview_step=step, eta_s=12.0))
            async with AsyncJobsClient(f"127.0.0.1:{port}") as client:
                watch = client.watch(job.id)
                first = await anext(watch)
                assert first.snapshot and first.state == "running"
                assert first.preview == webp(200) and first.preview_step == 4 and first.preview_mime == "image/webp"
                await watch.aclose()
            # The job ends (as _finish publishes it): its preview goes with it.
            scheduler.bus.publish(JobEvent(job.id, "state", "failed", stage="failed", time=time.time()))
            assert scheduler.bus.previews.get(job.id) is None
        finally:
            await server.stop(None)
            scheduler.store.close()

    asyncio.run(scenario())


def test_previews_held_in_memory_are_bounded_in_size_count_and_age() -> None:
    store = PreviewStore(max_bytes=1000, max_jobs=3, max_age_s=60.0)
    assert store.put("big", b"x" * 1001, "image/webp", 1, now=0.0) is None and len(store) == 0
    for i in range(5):
        store.put(f"job{i}", bytes([i]) * 1000, "image/webp", i, now=float(i))
    assert len(store) == 3 and store.bytes_held == 3000 and store.get("job0", now=5.0) is None
    newer = store.put("job2", b"n" * 10, "image/jpeg", 9, now=10.0)
    assert newer is not None and store.get("job2", now=10.0) == newer and newer.version > 5
    # Not refreshed for a minute: gone; one kept fresh stays.
    assert store.get("job3", now=64.0) is None and store.get("job2", now=64.0) == newer
    store.drop("job2")
    assert store.get("job2", now=64.0) is None


def test_a_slow_watcher_does_not_pile_up_previews() -> None:
    bus = EventBus()
    picture = webp(50)

    def progress(step: int, **kw: Any) -> JobEvent:
        return JobEvent("j", "progress", "running", stage="denoise", step=step, total=100, **kw)

    with bus.subscribe("j") as slow:
        for step in range(1, 51):
            bus.publish(progress(step, preview=picture, preview_mime="image/webp", preview_step=step))
        queued = [slow.get_nowait() for _ in range(slow.qsize())]
        assert len(queued) == 50 and sum(bool(e.preview) for e in queued) == PREVIEW_BACKLOG
        assert bus.previews.get("j") is not None and bus.previews.get("j").step == 50  # type: ignore[union-attr]
        # Going back to the queue (or ending) forgets it.
        bus.publish(JobEvent("j", "retry", "queued", message="agent lost"))
        assert bus.previews.get("j") is None

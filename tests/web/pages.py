"""The web page's app over a real store and scheduler (no agents: jobs stay queued), for TestClient tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from starlette.testclient import TestClient

from artifex_agent.config import ClusterConfig
from artifex_agent.coordinator.cache import ResultsCache
from artifex_agent.coordinator.events import EventBus
from artifex_agent.coordinator.job import Job
from artifex_agent.coordinator.jobs import JobQueue
from artifex_agent.coordinator.messages import JobEvent
from artifex_agent.coordinator.scheduler import Scheduler
from artifex_agent.coordinator.store import Store
from artifex_agent.jobspec import JobSpec
from artifex_agent.web.app import Web, create_app
from artifex_agent.web.auth import CSRF_FIELD

PASSWORD = "correct horse battery staple"


def write_mp4(path: Path, frames: int = 24, size: int = 64) -> Path:
    """A real H.264 MP4 (a moving gradient), long enough to seek in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=8)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            img = np.zeros((size, size, 3), np.uint8)
            img[..., 0] = (np.arange(size)[None, :] * 4 + i * 8) % 256
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@dataclass
class Pages:
    """A TestClient on the app, the output root, and a way to put finished jobs in the store."""

    client: TestClient
    web: Web
    outputs: Path
    store: Store

    def login(self) -> str:
        """Log in; returns the session's CSRF token (read from the page, as a browser would)."""
        reply = self.client.post("/login", data={"password": PASSWORD, "next": "/"}, follow_redirects=False)
        assert reply.status_code == 303, reply.text
        return self.csrf()

    def csrf(self) -> str:
        page = self.client.get("/submit").text
        marker = f'name="{CSRF_FIELD}" value="'
        start = page.index(marker) + len(marker)
        return page[start:page.index('"', start)]

    def finished_job(self, prompt: str, outputs: list[str], job_id: str = "") -> Job:
        """A done job with these output paths, written to the store as the scheduler would."""
        spec = JobSpec(prompts=[prompt], model="wan2.2-tiny", width=64, height=64, frames=5, steps=1)
        job = Job.submitted(job_id or f"done{abs(hash(prompt)) % 10**6:06d}", spec, 1000.0)
        job.start("a", "b", "", 1001.0)
        job.finish(outputs, ["0" * 64] * len(outputs), 1002.0)
        self.store.insert(job, spec.content_key(), JobEvent(job.id, "state", "queued", stage="queued", time=1000.0))
        self.store.save(job, JobEvent(job.id, "state", "done", stage="done", time=1002.0, message="done"))
        return job


def bare_cluster(tmp: Path) -> ClusterConfig:
    """A cluster file's worth of settings: state under `tmp`, one agent that is never contacted."""
    return ClusterConfig.from_dict({
        "coordinator": {"database": str(tmp / "jobs.db"), "results_cache": str(tmp / "cache")},
        "agents": {"a": {"address": "127.0.0.1:1"}}})


def open_scheduler(cluster: ClusterConfig) -> Scheduler:
    """The coordinator's scheduler over its store, not started: jobs queue, nothing dispatches them."""
    store = Store(cluster.coordinator.database).open()
    return Scheduler(cluster, store, EventBus(), ResultsCache(cluster.coordinator.results_cache))


@contextmanager
def pages(tmp: Path, password: str = PASSWORD, **web: object) -> Iterator[Pages]:
    """The app over a fresh store; agents named but never contacted (the pool is not started)."""
    outputs = tmp / "outputs"
    outputs.mkdir()
    cluster = ClusterConfig.from_dict({
        "coordinator": {"database": str(tmp / "state" / "jobs.db"), "results_cache": str(tmp / "cache")},
        "web": {"password": password, **web},
        "agents": {"a": {"address": "127.0.0.1:1", "output_root": str(outputs)}}})
    scheduler = open_scheduler(cluster)
    store = scheduler.store
    web_state = Web.build(cluster, JobQueue(scheduler, cluster.presets), password)
    try:
        with TestClient(create_app(web_state), base_url="http://127.0.0.1:8265") as client:
            yield Pages(client, web_state, outputs, store)
    finally:
        store.close()

"""A run's end for each of its jobs (coordinator/run_ends.py) and what it tells (coordinator/run_events.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from artifex_agent.config import AgentConfig, ClusterConfig, CoordinatorConfig
from artifex_agent.coordinator.agents import AgentHandle, AgentPool
from artifex_agent.coordinator.batching import QueueEntry
from artifex_agent.coordinator.cache import ResultsCache
from artifex_agent.coordinator.events import EventBus
from artifex_agent.coordinator.held_retry import HeldRetries
from artifex_agent.coordinator.job import Job
from artifex_agent.coordinator.run import Run
from artifex_agent.coordinator.run_ends import RunEnds
from artifex_agent.coordinator.run_events import RunEvents
from artifex_agent.errors import StreamError
from artifex_agent.jobspec import JobSpec
from artifex_agent.metrics import JobMetrics


def _ends(tmp_path: Path, max_attempts: int = 4) -> tuple[RunEnds, CollectorRegistry]:
    metrics, registry = JobMetrics(), CollectorRegistry()
    metrics.register(registry)
    cfg = CoordinatorConfig(max_attempts=max_attempts, backoff_initial_s=2.0)
    return RunEnds(cfg, AgentPool(ClusterConfig()), ResultsCache(tmp_path / "cache"), HeldRetries(),
                   RunEvents(EventBus(), metrics), metrics), registry


def _running(job_id: str) -> QueueEntry:
    job = Job.submitted(job_id, JobSpec.from_dict({"prompt": "a fox", "seed": 1}), time.time() - 5)
    job.start("gen", "post", "", time.time())
    return QueueEntry(job, 0, f"key-{job_id}", time.time(), stage_since=time.time())


def _run(*entries: QueueEntry) -> Run:
    gen = AgentHandle(AgentConfig(name="gen"), stub=None, channel=None)  # type: ignore[arg-type]
    return Run("b1", list(entries), gen=gen, post=gen)


def test_a_broken_stream_is_retried_after_a_backoff_until_the_attempts_run_out(tmp_path: Path) -> None:
    ends, registry = _ends(tmp_path, max_attempts=2)
    entry = _running("j1")
    [(job, event, not_before)] = asyncio.run(ends.finished(_run(entry), [StreamError("trailer checksum differs")]))
    assert (job.state, job.stage, event and event.kind) == ("queued", "waiting", "retry")
    assert event is not None and event.message == ("frame stream broken: trailer checksum differs; "
                                                   "retrying in 2.0s (attempt 2 of 2)")
    assert not_before == entry.not_before and not_before - entry.queued_at == pytest.approx(2.0)
    assert registry.get_sample_value("artifex_job_retries_total", {"reason": "stream_broken"}) == 1.0

    job.start("gen", "post", "", time.time())
    job, event, not_before = ends.failed(entry, StreamError("trailer checksum differs"), time.time())
    assert (job.state, not_before) == ("failed", 0.0)
    assert event is not None
    assert event.message == "failed after 2 attempts: frame stream broken: trailer checksum differs"
    assert registry.get_sample_value("artifex_job_failures_total", {"reason": "stream_broken"}) == 1.0


def test_an_interrupted_run_cancels_the_cancelled_job_and_requeues_the_others(tmp_path: Path) -> None:
    ends, registry = _ends(tmp_path)
    cancelled, other = _running("j1"), _running("j2")
    cancelled.cancel_requested = True
    items = ends.interrupted(_run(cancelled, other), stopping=False)
    assert [(job.id, job.state, event and event.message) for job, event, _ in items] == [
        ("j1", "cancelled", "cancelled while running on gen"),
        ("j2", "queued", "requeued: a job of its batch was cancelled")]
    assert other.job.attempts == 0  # an interrupted attempt does not count
    # Each job's time in its stage was counted as it left it.
    assert registry.get_sample_value("artifex_job_stage_duration_seconds_count", {"stage": "generating"}) == 2.0
    again = _running("j3")
    [(_, event, _)] = ends.interrupted(_run(again), stopping=True)
    assert event is not None and event.message == "requeued: the coordinator is shutting down"


def test_a_state_change_is_published_logged_once_under_the_scheduler_and_timed_when_it_ends(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ends, registry = _ends(tmp_path, max_attempts=1)
    entry = _running("j1")
    [(_, event, _)] = asyncio.run(ends.finished(_run(entry), [StreamError("short")]))

    async def published() -> list[object]:
        with ends.events.bus.subscribe("j1") as queue, \
                caplog.at_level(logging.INFO, logger="artifex_agent.coordinator.scheduler"):
            ends.events.publish(event)
            return [queue.get_nowait()]

    assert asyncio.run(published()) == [event]
    records = [r for r in caplog.records if r.name == "artifex_agent.coordinator.scheduler"]
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.WARNING, "job j1: failed after 1 attempts: frame stream broken: short")]
    assert registry.get_sample_value("artifex_job_duration_seconds_count", {"outcome": "failed"}) == 1.0

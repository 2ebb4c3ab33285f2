"""How a run's end is written down for each of its jobs: done, retried later, failed, cancelled or requeued.

Each answer is the job, changed in memory, with its event, as Store.save_many takes them; the
scheduler commits them, then drops the ended jobs from its queue and publishes the events
(coordinator/scheduler.py). A result goes into the results cache here, before it is recorded.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from artifex_agent.config import CoordinatorConfig
from artifex_agent.coordinator.agents import AgentPool
from artifex_agent.coordinator.batching import QueueEntry
from artifex_agent.coordinator.cache import ResultsCache
from artifex_agent.coordinator.held_retry import HeldRetries
from artifex_agent.coordinator.job import Job
from artifex_agent.coordinator.messages import JobEvent
from artifex_agent.coordinator.pipeline import output_name
from artifex_agent.coordinator.retry import backoff_s, classify, reason
from artifex_agent.coordinator.run import Run
from artifex_agent.coordinator.run_events import RunEvents
from artifex_agent.metrics import JobMetrics
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb

# One job's end as the store records it: the job, its event, when it may run again (0: now or never).
Item = tuple[Job, JobEvent | None, float]


class RunEnds:
    """Decides what each job of an ended run becomes, and counts it."""

    def __init__(self, cfg: CoordinatorConfig, pool: AgentPool, cache: ResultsCache, held_retries: HeldRetries,
                 events: RunEvents, metrics: JobMetrics) -> None:
        self.cfg = cfg
        self.pool = pool
        self.cache = cache
        self.held_retries = held_retries
        self.events = events
        self.metrics = metrics
        # Content keys a run put into the cache: a queued job with one looks there again before it runs.
        self.cached_keys: set[str] = set()

    async def finished(self, run: Run, results: list[Any]) -> list[Item]:
        """The run returned: each job's result (done, its outputs cached) or error (retried or failed)."""
        now = time.time()
        items: list[Item] = []
        for entry, result in zip(run.entries, results, strict=True):
            job = entry.job
            self.events.stage_ends(entry, now)
            if isinstance(result, pb.PostResult):
                outputs, sha256 = list(result.output_paths), list(result.sha256)
                if await asyncio.to_thread(self.cache.store, entry.content_key, outputs, sha256,
                                           output_name(job)):
                    self.cached_keys.add(entry.content_key)
                job.finish(outputs, sha256, now)
                done = self.events.event(job, "state", f"done in {now - run.started:.1f}s: {', '.join(job.outputs)}")
                items.append((job, done, 0.0))
                continue
            items.append(self.failed(entry, result, now))
        return items

    def failed(self, entry: QueueEntry, exc: BaseException, now: float) -> Item:
        """The job's attempt failed: queued again after a backoff while attempts are left, else failed."""
        job = entry.job
        message, retryable, dead_agent = classify(exc)
        if dead_agent:
            self.pool.mark_down(dead_agent, message)
        why_label = reason(exc)
        if retryable and job.attempts < self.cfg.max_attempts:
            self.metrics.retries.labels(reason=why_label).inc()
            message += self.held_retries.note(job.id, exc)
            delay = backoff_s(job.attempts, self.cfg.backoff_initial_s, self.cfg.backoff_max_s)
            job.retry_later(message)
            entry.not_before, entry.queued_at = now + delay, now
            event = self.events.event(job, "retry", f"{message}; retrying in {delay:.1f}s "
                                                    f"(attempt {job.attempts + 1} of {self.cfg.max_attempts})")
            return job, event, entry.not_before
        self.metrics.failures.labels(reason=why_label).inc()
        job.fail(message, now)
        why = "" if not retryable else f" after {job.attempts} attempts"
        return job, self.events.event(job, "state", f"failed{why}: {message}"), 0.0

    def interrupted(self, run: Run, stopping: bool) -> list[Item]:
        """The run was cancelled: its cancelled jobs end, the others go back to the queue as they were."""
        now = time.time()
        items: list[Item] = []
        for entry in run.entries:
            job = entry.job
            self.events.stage_ends(entry, now)
            if entry.cancel_requested:
                job.cancel(now)
                items.append((job, self.events.event(job, "state", f"cancelled while running on {run.gen.name}"),
                              0.0))
            else:
                job.requeue()
                entry.queued_at = now
                why = "the coordinator is shutting down" if stopping else "a job of its batch was cancelled"
                items.append((job, self.events.event(job, "info", f"requeued: {why}"), 0.0))
        return items

"""What a client can do to the queue: submit, look, cancel, retry, watch."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence

from artifex_agent.coordinator.messages import TERMINAL, Job, JobEvent
from artifex_agent.coordinator.scheduler import Scheduler, new_id
from artifex_agent.errors import ArtifexError, NotFoundError, RequestError
from artifex_agent.jobspec import JobSpec, check_idempotency_key
from artifex_agent.presets import Preset, resolve
from artifex_agent.presets import builtin as builtin_presets

logger = logging.getLogger(__name__)

# A List page: this many jobs at most, and cut at MAX_PAGE_BYTES (messages.jobs_page), so one
# reply stays far below the message limit however big the jobs are.
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500
MAX_PAGE_BYTES = 4 << 20


class JobQueue:
    """The Jobs service's operations over the scheduler and the store."""

    def __init__(self, scheduler: Scheduler, presets: dict[str, Preset] | None = None) -> None:
        self.s = scheduler
        self.presets = builtin_presets() if presets is None else presets

    def check(self, spec: JobSpec) -> None:
        """Refuse what no agent can run, beyond JobSpec's own checks (RequestError)."""
        if not 0 <= spec.seed < 2**63:
            raise RequestError(f"seed must be within 0..2**63-1; got {spec.seed}")
        generators = [a for a in self.s.pool if "generate" in a.cfg.roles]
        # Judge only when every generating agent has said what it holds: a down agent may have the model.
        if generators and all(a.info is not None for a in generators) \
                and not any(a.has_model(spec.model) for a in generators):
            have = sorted({m.name for a in generators for m in a.info.models if m.complete})  # type: ignore[union-attr]
            raise RequestError(f"model {spec.model!r} is on no agent (they have: {', '.join(have) or 'nothing'})")

    async def submit(self, spec: JobSpec, idempotency_key: str = "") -> tuple[Job, bool]:
        """Store a job (or find the one with this key); returns (job, existed).

        A preset is resolved here, so the store keeps the values the job runs with (and the preset's name).
        """
        spec = resolve(spec, self.presets)
        self.check(spec)
        check_idempotency_key(idempotency_key)
        now = time.time()
        content_key = spec.content_key()
        hit = await asyncio.to_thread(self.s.cache.lookup, content_key)
        job = Job(id=new_id(), state="queued", spec=spec, created=now, stage="queued",
                  idempotency_key=idempotency_key)
        message = "queued"
        if hit is not None:
            job.state, job.stage, job.cached, job.started, job.finished = "done", "done", True, now, now
            job.outputs, job.sha256 = hit.outputs, hit.sha256
            message = "done from the results cache (an identical job ran before)"
        event = JobEvent(job.id, "state", job.state, stage=job.stage, message=message, time=now, job=job.copy())
        stored, existed = await self.s.call(self.s.store.insert, job, content_key, event)
        if existed:
            live = self.s.entries.get(stored.id)
            return (live.job.copy() if live else stored), True
        if hit is None:
            self.s.enqueue(job, content_key, now)
        self.s.bus.publish(event)
        logger.info("job %s %s (%s, %d prompt(s))", job.id, message, spec.model, len(spec.prompts))
        return job.copy(), False

    async def get(self, job_id: str) -> Job:
        entry = self.s.entries.get(job_id)
        if entry is not None:
            return entry.job.copy()
        job = await self.s.call(self.s.store.get, job_id)
        if job is None:
            raise NotFoundError(f"no job {job_id!r}")
        return job

    async def page(self, states: Sequence[str] | None = None, size: int = 0,
                   before: int = 0) -> tuple[list[tuple[int, Job]], bool]:
        """(seq, job) newest first, submitted before `before` (0: from the newest); and whether more follow."""
        size = min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        rows = await self.s.call(self.s.store.page, list(states or ()) or None, size + 1, before)
        # Running jobs move faster than the store is written (stage, progress): show the live copy.
        live = [(seq, self.s.entries[j.id].job.copy() if j.id in self.s.entries else j) for seq, j in rows[:size]]
        return live, len(rows) > size

    async def cancel(self, job_id: str) -> Job:
        """Queued: removed from the queue. Running: its agents' calls are cancelled. Finished: unchanged."""
        entry = self.s.entries.get(job_id)
        if entry is None:
            return await self.get(job_id)
        job = entry.job
        if job.state == "queued":
            now = time.time()
            job.state, job.stage, job.finished = "cancelled", "cancelled", now
            event = JobEvent(job.id, "state", "cancelled", stage="cancelled", message="cancelled while queued",
                             time=now, job=job.copy())
            await self.s.call(self.s.store.save, job, event)
            self.s.entries.pop(job_id, None)
            self.s.bus.publish(event)
            return job.copy()
        run = self.s.run_of(job_id)
        if run is None or run.task is None or run.finishing:
            return job.copy()  # it is finishing right now: too late to stop
        entry.cancel_requested = True
        run.task.cancel()
        await asyncio.wait({run.task}, timeout=10.0)
        return job.copy()

    async def retry(self, job_id: str) -> Job:
        """Put a failed or cancelled job back in the queue with its attempts reset."""
        if job_id in self.s.entries:
            raise ArtifexError(f"job {job_id} is {self.s.entries[job_id].job.state}; nothing to retry")
        job = await self.get(job_id)
        if job.state not in ("failed", "cancelled"):
            raise ArtifexError(f"job {job_id} is {job.state}; only failed or cancelled jobs can be retried")
        now = time.time()
        job.state, job.stage, job.attempts, job.error = "queued", "queued", 0, ""
        job.started = job.finished = None
        event = JobEvent(job.id, "state", "queued", stage="queued", message="queued again (retry requested)",
                         time=now, job=job.copy())
        await self.s.call(self.s.store.save, job, event)
        self.s.enqueue(job, job.spec.content_key(), now, cache_checked=False)
        self.s.bus.publish(event)
        return job.copy()

    async def watch(self, job_id: str, history: bool = False) -> AsyncIterator[JobEvent]:
        """A snapshot of the job, then its events until it ends (every job's, forever, when job_id is "")."""
        with self.s.bus.subscribe(job_id) as queue:
            if job_id:
                job = await self.get(job_id)
                if history:
                    for event in await self.s.call(self.s.store.events, job_id):
                        yield event
                yield JobEvent(job.id, "state", job.state, stage=job.stage, message="now", agent=job.agent,
                               time=time.time(), job=job)
                if job.terminal:
                    return
            while True:
                event = await queue.get()
                yield event
                if job_id and event.kind == "state" and event.state in TERMINAL:
                    return

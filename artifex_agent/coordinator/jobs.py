"""What a client can do to the queue: submit, look, cancel, retry, watch."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence

from artifex_agent.coordinator.agents import AgentPool
from artifex_agent.coordinator.cache import remove_placed
from artifex_agent.coordinator.job import TERMINAL, Job
from artifex_agent.coordinator.messages import JobEvent
from artifex_agent.coordinator.pipeline import output_name
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
# A priority a client may set (JobSpec.priority: higher runs first).
MIN_PRIORITY, MAX_PRIORITY = -1000, 1000


class JobQueue:
    """The Jobs service's operations: checks and answers here, the queue itself in the scheduler."""

    def __init__(self, scheduler: Scheduler, presets: dict[str, Preset] | None = None) -> None:
        self.scheduler = scheduler
        self.presets = builtin_presets() if presets is None else presets

    @property
    def agents(self) -> AgentPool:
        """The agents as last heard from: what models they hold, with which size rules."""
        return self.scheduler.pool

    def check(self, spec: JobSpec) -> None:
        """Refuse what no agent can run, every problem at once (JobProblems): JobSpec's own checks, the size
        rules the agents read from the model, and whether any agent has the model or the encoder."""
        spec.validate(self.agents)

    async def submit(self, spec: JobSpec, idempotency_key: str = "") -> tuple[Job, bool]:
        """Store a job (or find the one with this key); returns (job, existed).

        A preset is resolved here, so the store keeps the values the job runs with (and the preset's name).
        """
        with self.scheduler.urgency.urgent():
            return await self._submit(spec, idempotency_key)

    async def _submit(self, spec: JobSpec, idempotency_key: str) -> tuple[Job, bool]:
        spec = resolve(spec, self.presets)
        self.check(spec)
        check_idempotency_key(idempotency_key)
        now = time.time()
        content_key = spec.content_key()
        job = Job.submitted(new_id(), spec, now, idempotency_key)
        hit = await self.scheduler.cached(content_key, output_name(job))
        message = "queued"
        if hit is not None:
            job.finish_from_cache(hit.outputs, hit.sha256, now)
            message = "done from the results cache (an identical job ran before)"
        event = JobEvent(job.id, "state", job.state, stage=job.stage, message=message, time=now, job=job.copy())
        stored, existed = await self.scheduler.add(job, content_key, event)
        if existed:
            if hit is not None and hit.placed:  # for a job id never kept: the key's own job has its files
                await asyncio.to_thread(remove_placed, [p for p in hit.outputs if p not in stored.outputs])
            return stored, True
        logger.info("job %s %s (%s, %d prompt(s))", job.id, message, spec.model, len(spec.prompts))
        return job.copy(), False

    async def get(self, job_id: str) -> Job:
        job = await self.scheduler.job(job_id)
        if job is None:
            raise NotFoundError(f"no job {job_id!r}")
        return job

    async def page(self, states: Sequence[str] | None = None, size: int = 0,
                   before: int = 0) -> tuple[list[tuple[int, Job]], bool]:
        """(seq, job) newest first, submitted before `before` (0: from the newest); and whether more follow."""
        size = min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        rows = await self.scheduler.page(list(states or ()) or None, size + 1, before)
        return rows[:size], len(rows) > size

    async def cancel(self, job_id: str) -> Job:
        """Queued: removed from the queue. Running: its agents' calls are cancelled. Finished: unchanged."""
        job = await self.scheduler.cancel(job_id)
        return job if job is not None else await self.get(job_id)

    async def retry(self, job_id: str) -> Job:
        """Put a failed or cancelled job back in the queue with its attempts reset."""
        live = self.scheduler.live(job_id)
        if live is not None:
            raise ArtifexError(f"job {job_id} is {live.state}; nothing to retry")
        job = await self.get(job_id)
        if job.state not in ("failed", "cancelled"):
            raise ArtifexError(f"job {job_id} is {job.state}; only failed or cancelled jobs can be retried")
        now = time.time()
        job.retry()
        event = JobEvent(job.id, "state", "queued", stage="queued", message="queued again (retry requested)",
                         time=now, job=job.copy())
        await self.scheduler.resubmit(job, event, now)
        return job.copy()

    async def set_priority(self, job_id: str, priority: int) -> Job:
        """Change a queued job's priority (higher runs first); a running or finished job is refused."""
        if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
            raise RequestError(f"priority must be within {MIN_PRIORITY}..{MAX_PRIORITY}; got {priority}")
        job = await self.scheduler.set_priority(job_id, priority)
        if job is None:
            job = await self.get(job_id)
            raise ArtifexError(f"job {job_id} is {job.state}; only a queued job's priority can change")
        logger.info("job %s priority set to %d", job_id, priority)
        return job

    async def watch(self, job_id: str, history: bool = False) -> AsyncIterator[JobEvent]:
        """A snapshot of the job, then its events until it ends (every job's, forever, when job_id is "")."""
        with self.scheduler.subscribe(job_id) as queue:
            if job_id:
                job = await self.get(job_id)
                if history:
                    for event in await self.scheduler.history(job_id):
                        yield event
                yield JobEvent(job.id, "state", job.state, stage=job.stage, agent=job.agent, time=time.time(),
                               job=job, snapshot=True)
                if job.terminal:
                    return
            while True:
                event = await queue.get()
                yield event
                if job_id and event.kind == "state" and event.state in TERMINAL:
                    return

"""The queue in motion: batches ready jobs onto idle agents, records every step, retries failures.

Every state change is committed to the store before it takes effect outside (a Generate
call starts only after its jobs are "running" on disk), so after a crash the store says
what to re-run. An agent is given one generation at a time; it is free for the next one
as soon as its frames start streaming, so post-processing of one job overlaps generation
of the next. What each change tells watchers, metrics and the log is run_events.py's; what a
run's end makes of each job (done, retried, failed, requeued) is run_ends.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from artifex_agent.config import ClusterConfig
from artifex_agent.coordinator import post_runs, routing, split_runs
from artifex_agent.coordinator.agents import AgentHandle, AgentPool
from artifex_agent.coordinator.batching import QueueEntry, pick_batch
from artifex_agent.coordinator.cache import CacheHit, ResultsCache
from artifex_agent.coordinator.events import EventBus
from artifex_agent.coordinator.held_retry import HeldRetries
from artifex_agent.coordinator.job import Job
from artifex_agent.coordinator.messages import JobEvent
from artifex_agent.coordinator.pipeline import DeliveryFailed, output_name, run_batch
from artifex_agent.coordinator.run import Run
from artifex_agent.coordinator.run_ends import Item, RunEnds
from artifex_agent.coordinator.run_events import RunEvents
from artifex_agent.coordinator.store import Store
from artifex_agent.coordinator.urgency import Urgency
from artifex_agent.metrics import JobMetrics
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.wire_enums import stage_from_pb

logger = logging.getLogger(__name__)
T = TypeVar("T")


def new_id() -> str:
    return secrets.token_hex(6)


class Scheduler:
    """Owns the in-memory queue (queued and running jobs) and the runs in flight."""

    def __init__(self, cluster: ClusterConfig, store: Store, bus: EventBus, cache: ResultsCache) -> None:
        self.cfg = cluster.coordinator
        self.store = store
        self.bus = bus
        self.cache = cache
        self.pool = AgentPool(cluster, self.cfg.health_interval_s, on_change=self.wake)
        self.entries: dict[str, QueueEntry] = {}
        self.runs: dict[str, Run] = {}
        self._run_of: dict[str, Run] = {}
        self.held_retries = HeldRetries()
        self.metrics = JobMetrics()
        self.metrics.agents.source = self.pool.view  # every agent and link, at scrape time
        self.events = RunEvents(bus, self.metrics)
        self.ends = RunEnds(self.cfg, self.pool, cache, self.held_retries, self.events, self.metrics)
        self._counter = itertools.count()
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._wake = asyncio.Event()
        self.urgency = Urgency()  # page work (web/) waits for Submits and dispatch passes
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store method on the database thread (SQLite blocks; the event loop must not)."""
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    def wake(self) -> None:
        self._wake.set()
        if self._task is not None and not self._stopping:  # a pass will come: page work waits for it
            self.urgency.dispatch_due()

    def enqueue(self, job: Job, content_key: str, now: float, cache_checked: bool = True) -> None:
        """Add a stored queued job to the in-memory queue and look for an agent for it."""
        self.entries[job.id] = QueueEntry(job, next(self._counter), content_key, now, cache_checked=cache_checked)
        self.wake()

    async def begin_one(self, entry: QueueEntry, gen: AgentHandle, post: AgentHandle, where: str) -> Run | None:
        """Record one job as running on gen/post (committed first) for split_runs.py and post_runs.py.

        Its run is not launched yet; None when the job was cancelled while it was being recorded.
        """
        run = Run(new_id(), [entry], gen, post)
        job = entry.job.copy()
        now = time.time()
        job.start(gen.name, post.name, "", now, waited=now - entry.queued_at)
        event = self.events.event(job, "state", f"attempt {job.attempts}: {where}")
        await self.call(self.store.save, job, event)
        if entry.job.state != "queued" or self.entries.get(job.id) is not entry:
            return None  # its "cancelled" was written after
        entry.job = job
        self._run_of[job.id] = run
        self.events.publish(event)
        job.started = entry.stage_since = time.time()
        self.metrics.queue_wait.observe(now - entry.queued_at)
        return run

    def launch(self, run: Run, work: Callable[[Run], Awaitable[list[Any]]], name: str,
               after: Callable[[], None] | None = None) -> None:
        """Run `work` (each job's result or error) as the run's task; record the outcome as for any run."""
        self.runs[run.batch_id] = run
        run.task = asyncio.create_task(self._run_work(run, work, after), name=name)

    async def _run_work(self, run: Run, work: Callable[[Run], Awaitable[list[Any]]],
                        after: Callable[[], None] | None) -> None:
        try:
            try:
                results = await work(run)
            except asyncio.CancelledError:
                await self._record(self.ends.interrupted(run, self._stopping))
                return
            except Exception as exc:
                results = [exc] * len(run.entries)
            run.finishing = True
            try:
                await self._record(await self.ends.finished(run, results))
            except Exception:
                # The store failed (disk full?): the jobs stay "running" on disk and are re-run at restart.
                logger.exception("cannot record the end of run %s", run.batch_id)
        finally:
            if after is not None:
                after()
            self._forget(run)
            self.wake()

    def publish_info(self, run: Run, message: str) -> None:
        """An "info" event for the run's (single) job: a split chosen, a failover."""
        self.events.publish(self.events.event(run.entries[0].job, "info", message))

    def progress(self, run: Run, index: int | None, source: str, p: pb.Progress) -> None:
        """Progress of a run from its agents (throttled, mapped to the job's stage)."""
        said = stage_from_pb(p.current_stage)  # a newer agent's stage arrives as "unspecified"
        if source == "generate" and said == "stream" and not run.gen_released:
            # Frames are out of the GPU: the agent can start its next generation while they stream.
            run.gen_released, run.posting = True, True
            run.gen.generating -= 1
            run.post.posting += 1
            self.wake()
        self.events.progress(run, index, source, said, p)

    def run_of(self, job_id: str) -> Run | None:
        """The run a running job is part of."""
        return self._run_of.get(job_id)

    # ------------------------------------------------------------------ what the Jobs service asks of it

    async def cached(self, content_key: str, name: str = "") -> CacheHit | None:
        """The results cache's outputs for an identical job, if it ran before (placed as output `name`)."""
        return await asyncio.to_thread(self.cache.lookup, content_key, name)

    async def add(self, job: Job, content_key: str, event: JobEvent) -> tuple[Job, bool]:
        """Store a new job (queued, or done from the cache) and queue it; (job, existed) as the store says.

        With an idempotency key already used, the job that has it instead (the live copy while it is queued
        or running), and nothing is queued or published.
        """
        stored, existed = await self.call(self.store.insert, job, content_key, event)
        if existed:
            live = self.live(stored.id)
            return (live if live is not None else stored), True
        if job.state == "queued":
            self.enqueue(job, content_key, event.time)
        self.bus.publish(event)  # the Jobs service logs it, with what it knows of the request
        self.events.count_end(event)
        return job, False

    async def resubmit(self, job: Job, event: JobEvent, now: float) -> None:
        """Record a finished job queued again (a retry) and queue it; the cache is consulted afresh."""
        await self.call(self.store.save, job, event)
        self.enqueue(job, job.spec.content_key(), now, cache_checked=False)
        self.events.publish(event)

    def live(self, job_id: str) -> Job | None:
        """A copy of the job while it is queued or running (None once it ended or if unknown)."""
        entry = self.entries.get(job_id)
        return entry.job.copy() if entry is not None else None

    async def job(self, job_id: str) -> Job | None:
        """The job: its live copy while queued or running, else as stored (None if unknown)."""
        live = self.live(job_id)
        return live if live is not None else await self.call(self.store.get, job_id)

    async def page(self, states: list[str] | None, limit: int, before: int) -> list[tuple[int, Job]]:
        """(seq, job) newest first as the store has them, each queued or running job as it is now."""
        if self.store.reads_on_loop:
            rows = self.store.read_page(states, limit, before)
        else:
            rows = await self.call(self.store.page, states, limit, before)
        # Running jobs move faster than the store is written (stage, progress): show the live copy.
        return [(seq, self.live(j.id) or j) for seq, j in rows]

    async def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued or running job; a copy of it as it is after (None: not queued nor running).

        A queued job ends at once; a running one when its run's calls are cancelled (waited for up to
        10 s). A run already recording its results is too late to stop: the job is returned unchanged.
        """
        entry = self.entries.get(job_id)
        if entry is None:
            return None
        job = entry.job
        if job.state == "queued":
            now = time.time()
            job.cancel(now)
            event = JobEvent(job.id, "state", "cancelled", stage="cancelled", message="cancelled while queued",
                             time=now, job=job.copy())
            await self.call(self.store.save, job, event)
            self.entries.pop(job_id, None)
            self.events.publish(event)
            return job.copy()
        run = self.run_of(job_id)
        if run is None or run.task is None or run.finishing:
            return job.copy()  # it is finishing right now: too late to stop
        entry.cancel_requested = True
        run.task.cancel()
        await asyncio.wait({run.task}, timeout=10.0)
        return job.copy()

    async def set_priority(self, job_id: str, priority: int) -> Job | None:
        """Give a queued job a new priority (stored first); a copy of it after (None: not queued)."""
        entry = self.entries.get(job_id)
        if entry is None or entry.job.state != "queued":
            return None
        job = entry.job.copy()
        job.spec = dataclasses.replace(job.spec, priority=priority)
        event = JobEvent(job.id, "info", "queued", stage=job.stage, time=time.time(),
                         message=f"priority set to {priority}", job=job.copy())
        await self.call(self.store.set_priority, job, event)
        if self.entries.get(job_id) is entry and entry.job.state == "queued":
            entry.job.spec = job.spec  # QueueEntry.order() reads it: the next dispatch sees the new order
        self.events.publish(event)
        self.wake()
        return job

    def subscribe(self, job_id: str = "") -> contextlib.AbstractContextManager[asyncio.Queue[JobEvent]]:
        """A queue receiving `job_id`'s events (every job's when empty) while the block runs."""
        return self.bus.subscribe(job_id)

    async def history(self, job_id: str) -> list[JobEvent]:
        """Every event stored for the job, oldest first."""
        return await self.call(self.store.events, job_id)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        requeued = await self.call(self.store.requeue_interrupted)
        if requeued:
            logger.info("requeued %d job(s) interrupted by the last shutdown: %s", len(requeued), ", ".join(requeued))
        now = time.time()
        for job, _seq, not_before, content_key in await self.call(self.store.queued):
            # A job that ran before waited since it was put back (when, the store does not keep): count from now.
            since = job.created if job.started is None else now
            self.entries[job.id] = QueueEntry(job, next(self._counter), content_key, since, not_before)
        logger.info("%d job(s) queued at start-up", len(self.entries))
        await self.pool.start()
        self._task = asyncio.create_task(self._loop(), name="scheduler")

    async def drain(self, grace_s: float) -> None:
        """Dispatch nothing more; let runs finish for `grace_s`, then cancel them (their jobs are requeued)."""
        self._stopping = True
        self.wake()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        tasks = [r.task for r in self.runs.values() if r.task is not None]
        if tasks:
            logger.info("waiting up to %.0fs for %d run(s) to finish", grace_s, len(tasks))
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def close(self) -> None:
        """After drain(): close the agents' channels and the store."""
        await self.pool.close()
        await self.call(self.store.close)
        self._db.shutdown(wait=True)

    # ------------------------------------------------------------------ the loop

    async def _loop(self) -> None:
        try:
            while not self._stopping:
                self._wake.clear()
                try:
                    with self.urgency.dispatching():
                        self.events.account_busy(self.pool)
                        due = await self._dispatch()
                        self.events.account_busy(self.pool)
                        self.events.explain_waits(self.entries.values(), list(self.pool), self.runs.values(),
                                                  batch_size=self.cfg.batch_size,
                                                  batch_timeout_s=self.cfg.batch_timeout_s)
                except Exception:
                    logger.exception("dispatch failed; trying again shortly")
                    due = time.time() + 1.0
                timeout = None if due is None else max(0.0, due - time.time())
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except TimeoutError:
                    pass
        finally:
            self.urgency.stand_down()

    async def _dispatch(self) -> float | None:
        """Start every batch that has an idle agent; returns when to look again (None: on the next event)."""
        now = time.time()
        due: float | None = None
        # An identical job running or earlier in the queue will fill the cache: wait for it.
        held = {e.content_key for run in self.runs.values() for e in run.entries}
        ready: list[QueueEntry] = []
        for entry in sorted(self.entries.values(), key=QueueEntry.order):
            if entry.job.state != "queued":
                continue
            if entry.not_before > now:
                due = entry.not_before if due is None else min(due, entry.not_before)
                continue
            if entry.content_key in held:
                continue
            held.add(entry.content_key)
            if (not entry.cache_checked or entry.content_key in self.ends.cached_keys) \
                    and await self._complete_from_cache(entry):
                continue
            ready.append(entry)
        # Post-only jobs (coordinator/post_runs.py) and split or decode-on-post jobs (split_runs.py,
        # holding two agents) run on their own, outside batches.
        for entry in [e for e in ready if post_runs.is_post_only(e.job.spec) or split_runs.is_split(e.job.spec)]:
            start = post_runs.start if post_runs.is_post_only(entry.job.spec) else split_runs.start
            if self._stopping or await start(self, entry):
                ready.remove(entry)
        # A post stage that failed while its frames stay held runs again from them (coordinator/held_retry.py).
        for entry in [e for e in ready if self.held_retries.pending(e.job.id)]:
            planned = self.held_retries.plan(self.pool, entry)
            if planned is not None and not self._stopping:
                ready.remove(entry)
                await self._start([entry], planned.gen, planned.post, retry=planned.failed)
        # First give every idle agent its batch, then place post-processing: an agent that is
        # about to generate is not idle, so a lone job still goes to the post-preferring agent
        # while a busy queue has each agent post its own jobs (the same work on both).
        plans: list[tuple[list[QueueEntry], AgentHandle]] = []
        for agent in routing.idle_generators(self.pool):
            if not ready or self._stopping:
                break

            def can_run(e: QueueEntry, agent: AgentHandle = agent) -> bool:
                return agent.can_generate(e.job.spec) and any(a.can_post(e.job.spec) for a in self.pool)

            batch, when = pick_batch(ready, can_run, batch_size=self.cfg.batch_size,
                                     timeout_s=self.cfg.batch_timeout_s, max_clips=agent.cfg.max_batch, now=now)
            if not batch:
                if when is not None:
                    due = when if due is None else min(due, when)
                continue
            taken = {id(e) for e in batch}
            ready = [e for e in ready if id(e) not in taken]
            agent.generating += 1  # reserved until its run starts
            plans.append((batch, agent))
        for i, (batch, agent) in enumerate(plans):
            agent.generating -= 1
            # Submit, cancel and other runs move on while this loop awaits: look at the queue as it is now.
            batch = [e for e in batch if e.job.state == "queued" and self.entries.get(e.job.id) is e]
            if not batch or self._stopping:
                continue
            first = batch[0].job
            # A job that ran before (even one a restart requeued) goes back to the same post agent.
            post = routing.choose_post(self.pool, first.spec, agent, first.post_agent)
            if post is None:
                continue
            batch = [e for e in batch if post.can_post(e.job.spec)]
            try:
                await self._start(batch, agent, post)
            except BaseException:
                for _, other in plans[i + 1:]:
                    other.generating -= 1
                raise
        return due

    async def _start(self, batch: list[QueueEntry], gen: AgentHandle, post: AgentHandle,
                     retry: DeliveryFailed | None = None) -> None:
        """Record the batch as running (committed first), then start its run."""
        now = time.time()
        run = Run(new_id(), batch, gen, post, retry=retry)
        items: list[tuple[Job, JobEvent | None, float]] = []
        for entry in batch:
            job = entry.job.copy()
            job.start(gen.name, post.name, run.batch_id if len(batch) > 1 else "", now, waited=now - entry.queued_at)
            where = f"generating on {gen.name}, post-processing on {post.name}"
            if retry is not None:
                where = f"post-processing on {post.name} from the frames {gen.name} holds (no new generation)"
            self.held_retries.forget(job.id)
            if len(batch) > 1:
                where += f" (batch {run.batch_id} of {len(batch)} jobs)"
            items.append((job, self.events.event(job, "state", f"attempt {job.attempts}: {where}"), 0.0))
        await self.call(self.store.save_many, items)
        started = []
        for entry, (job, event, _) in zip(batch, items, strict=True):
            if entry.job.state != "queued" or self.entries.get(job.id) is not entry:
                continue  # cancelled while the batch was being recorded (its "cancelled" was written after)
            entry.job = job
            self._run_of[job.id] = run
            started.append(entry)
            self.events.publish(event)
            self.metrics.queue_wait.observe(now - entry.queued_at)
        if not started:
            return
        run.entries = started
        # "started" is when the Generate call goes out (after the commit), as its events report it.
        now = time.time()
        for entry in started:
            entry.job.started = entry.stage_since = now
        if retry is None:
            gen.generating += 1
        else:  # nothing to generate: only the post agent works
            run.gen_released, run.posting = True, True
            post.posting += 1
        self.launch(run, self._deliver, f"run-{run.batch_id}")

    async def _deliver(self, run: Run) -> list[Any]:
        """The batch through its generating agent's Deliver (coordinator/pipeline.py)."""
        return await run_batch(run.gen.stub, [e.job for e in run.entries], run.batch_id,
                               lambda i, s, p: self.progress(run, i, s, p),
                               gen_name=run.gen.name, post_name=run.post.name, retry=run.retry)

    def _forget(self, run: Run) -> None:
        if not run.gen_released:
            run.gen_released = True
            run.gen.generating -= 1
        if run.posting:
            run.posting = False
            run.post.posting -= 1
        self.runs.pop(run.batch_id, None)
        for entry in run.entries:
            self._run_of.pop(entry.job.id, None)

    async def _record(self, items: list[Item]) -> None:
        """Commit jobs' ends (coordinator/run_ends.py, a cache hit), then drop the ended ones and tell watchers."""
        await self.call(self.store.save_many, items)
        for job, event, _ in items:
            if job.terminal:
                self.entries.pop(job.id, None)
            self.events.publish(event)

    async def _complete_from_cache(self, entry: QueueEntry) -> bool:
        entry.cache_checked = True
        hit = await asyncio.to_thread(self.cache.lookup, entry.content_key, output_name(entry.job))
        if hit is None:
            self.ends.cached_keys.discard(entry.content_key)
            return False
        job, now = entry.job, time.time()
        if job.state != "queued" or self.entries.get(job.id) is not entry:
            return True  # cancelled while the cache was read: nothing left to complete
        job.queued_s += max(now - entry.queued_at, 0.0)
        job.finish_from_cache(hit.outputs, hit.sha256, now)
        done = self.events.event(job, "state", "done from the results cache (an identical job ran before)")
        await self._record([(job, done, 0.0)])
        return True

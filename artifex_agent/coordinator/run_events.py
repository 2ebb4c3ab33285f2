"""What the scheduler's jobs do, told: JobEvents to watchers, the job metrics, one log line per state change.

The scheduler (coordinator/scheduler.py) decides and commits; this module turns its state changes,
its runs' agent progress and its queue's waits into events on the bus (coordinator/events.py), the
series of metrics.JobMetrics and the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from artifex_agent.coordinator.agents import AgentHandle
from artifex_agent.coordinator.batching import QueueEntry
from artifex_agent.coordinator.events import EventBus
from artifex_agent.coordinator.job import TERMINAL, Job
from artifex_agent.coordinator.messages import JobEvent
from artifex_agent.coordinator.run import Run
from artifex_agent.coordinator.waiting import explain
from artifex_agent.metrics import JobMetrics
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.vocabulary import Stage

# A job's log lines kept the scheduler's logger name when they moved here: operators filter on it.
logger = logging.getLogger("artifex_agent.coordinator.scheduler")

# Agent progress stages -> what the job is doing (others, "unspecified" among them, pass as they are).
_STAGE: dict[str, Stage] = {"queued": "generating", "denoise": "generating", "decode": "generating",
                            "stream": "streaming", "receive": "streaming", "post": "post"}


PROGRESS_EVERY_S = 0.2


class RunEvents:
    """Publishes, counts and logs what happens to the scheduler's jobs."""

    def __init__(self, bus: EventBus, metrics: JobMetrics) -> None:
        self.bus = bus
        self.metrics = metrics

    def event(self, job: Job, kind: str, message: str) -> JobEvent:
        """An event about `job` as it is now (a copy of it travels with the event)."""
        return JobEvent(job.id, kind, job.state, stage=job.stage, message=message,  # type: ignore[arg-type]
                        agent=job.agent, time=time.time(), job=job.copy())

    def publish(self, event: JobEvent | None) -> None:
        """Tell watchers; a state change (or a retry, a requeue) is also the job's one log line."""
        if event is None:
            return
        self.bus.publish(event)
        bad = event.kind == "retry" or event.state == "failed"
        logger.log(logging.WARNING if bad else logging.INFO, "job %s: %s", event.job_id, event.message)
        self.count_end(event)

    def count_end(self, event: JobEvent) -> None:
        """A job that ended: its time from submission into the metrics, by outcome."""
        job = event.job
        if event.kind == "state" and event.state in TERMINAL and job is not None and job.finished:
            outcome = "cached" if job.cached else event.state
            self.metrics.job_seconds.labels(outcome=outcome).observe(max(job.finished - job.created, 0.0))

    def progress(self, run: Run, index: int | None, source: str, said: str, p: pb.Progress) -> None:
        """An agent's progress (stage `said`) moves the run's jobs (or job `index`) on; watchers hear of it, thinned."""
        stage = "post" if source == "post" and said != "receive" else _STAGE.get(said, said)
        now = time.monotonic()
        entries = run.entries if index is None else [run.entries[index]]
        for entry in entries:
            self.advance(entry, stage)
            if p.eta_s > 0:  # the agent's estimate for its part; List and the pages show the job's end
                entry.job.expected_end = time.time() + p.eta_s
        # At most a few progress events a second per job (a stage change, a last step or a preview always):
        # watchers want to see movement, not pay for every step of a fast stage.
        if not p.preview and (said, p.step == p.total) == run.last_progress[1:] \
                and now - run.last_progress[0] < PROGRESS_EVERY_S:
            return
        run.last_progress = (now, said, p.step == p.total)
        agent = run.gen.name if source == "generate" else run.post.name
        for entry in entries:
            self.bus.publish(JobEvent(entry.job.id, "progress", "running", stage=said, step=p.step, total=p.total,
                                      message=p.message, agent=agent, time=time.time(), preview=p.preview,
                                      preview_mime=p.preview_mime, preview_step=p.preview_step, eta_s=p.eta_s))

    def advance(self, entry: QueueEntry, stage: str) -> None:
        """The running job moved on to `stage`: the stage it leaves is timed."""
        if stage != entry.job.stage:
            now = time.time()
            self.stage_ends(entry, now)
            entry.stage_since = now
        entry.job.advance(stage)

    def stage_ends(self, entry: QueueEntry, now: float) -> None:
        """The running job leaves its stage at `now` (moved on, or its attempt ended): the stage is timed."""
        if entry.stage_since and entry.job.state == "running":
            self.metrics.stage_seconds.labels(stage=entry.job.stage).observe(max(now - entry.stage_since, 0.0))
        entry.stage_since = 0.0

    def account_busy(self, agents: Iterable[AgentHandle]) -> None:
        """Feed each agent's busy state to the busy-time metric (around every dispatch: every change wakes it)."""
        self.metrics.busy.update({key: on for a in agents
                                  for key, on in (((a.name, "generate"), a.generating > 0),
                                                  ((a.name, "post"), a.posting > 0))}, time.monotonic())

    def explain_waits(self, entries: Iterable[QueueEntry], agents: list[AgentHandle], runs: Iterable[Run], *,
                      batch_size: int, batch_timeout_s: float) -> None:
        """Say why each job still queued waits (in the job, and to its watchers when the reason changes)."""
        queued = [e for e in sorted(entries, key=QueueEntry.order) if e.job.state == "queued"]
        if not queued:
            return
        now = time.time()
        waits = explain(queued, agents, runs, batch_size=batch_size, batch_timeout_s=batch_timeout_s, now=now)
        for entry in queued:
            wait = waits[entry.job.id]
            job = entry.job
            if wait.key == "starting":  # an agent is free for it: the next dispatch starts it
                job.waiting, job.expected_start = "", None
                continue
            job.waiting, job.expected_start = wait.reason, wait.expected
            if wait.key != entry.told:
                entry.told = wait.key
                event = self.event(job, "info", job.why_waiting(now))
                logger.debug("job %s: %s", job.id, event.message)
                self.bus.publish(event)

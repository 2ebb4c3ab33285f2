"""Jobs and their events as Python values, and their translation to and from jobs.proto."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from artifex_agent.coordinator.job import TERMINAL as TERMINAL
from artifex_agent.coordinator.job import Job, JobState
from artifex_agent.errors import RequestError
from artifex_agent.jobspec import JobSpec, lora_refs_from_pb, lora_refs_to_pb
from artifex_agent.proto.artifex.v1 import jobs_pb2 as jpb

_STATE_TO_PB: dict[str, jpb.JobState] = {
    "queued": jpb.JOB_STATE_QUEUED, "running": jpb.JOB_STATE_RUNNING, "done": jpb.JOB_STATE_DONE,
    "failed": jpb.JOB_STATE_FAILED, "cancelled": jpb.JOB_STATE_CANCELLED,
}
_STATE_FROM_PB: dict[int, str] = {v: k for k, v in _STATE_TO_PB.items()}
# JobSpec fields that travel as proto scalars (prompts, tags and loras are repeated/map fields).
_SCALARS = tuple(f.name for f in dataclasses.fields(JobSpec)
                 if not f.name.startswith("_") and f.name not in ("prompts", "tags", "loras"))


@dataclass
class JobEvent:
    """Something that happened to a job: a state change, a progress step, a retry."""

    job_id: str
    kind: Literal["state", "progress", "retry", "info"]
    state: JobState
    stage: str = ""
    step: int = 0
    total: int = 0
    message: str = ""
    agent: str = ""
    time: float = 0.0
    seq: int = 0
    job: Job | None = None


def state_to_pb(state: str) -> jpb.JobState:
    return _STATE_TO_PB[state]


def state_from_pb(value: int) -> JobState:
    try:
        return _STATE_FROM_PB[value]  # type: ignore[return-value]
    except KeyError:
        raise RequestError(f"unknown job state {value}") from None


def spec_to_pb(spec: JobSpec) -> jpb.JobSpec:
    """Every field set explicitly, so the receiver never falls back to a different default.

    Except with an unresolved preset: then only the fields the client gave travel, and the
    coordinator fills the others from the preset.
    """
    msg = jpb.JobSpec(prompts=list(spec.prompts), tags=dict(spec.tags), loras=lora_refs_to_pb(spec.loras))
    try:
        for name in _SCALARS:
            if not spec.preset or spec.given(name):
                setattr(msg, name, getattr(spec, name))
    except (ValueError, TypeError) as exc:
        raise RequestError(f"job field {name!r} cannot be sent: {exc}") from None
    return msg


def spec_from_pb(msg: jpb.JobSpec) -> JobSpec:
    """Unset fields take JobSpec's defaults; the result is validated (RequestError)."""
    raw: dict[str, object] = {"prompts": list(msg.prompts)}
    if msg.tags:
        raw["tags"] = dict(msg.tags)
    if msg.loras:
        raw["loras"] = lora_refs_from_pb(msg.loras)
    for name in _SCALARS:
        if msg.HasField(name):
            raw[name] = getattr(msg, name)
    return JobSpec.from_dict(raw)


def job_to_pb(job: Job) -> jpb.Job:
    return jpb.Job(
        id=job.id, state=state_to_pb(job.state), spec=spec_to_pb(job.spec), outputs=job.outputs, error=job.error,
        attempts=job.attempts, agent=job.agent, post_agent=job.post_agent, created_unix=job.created,
        started_unix=job.started or 0.0, finished_unix=job.finished or 0.0, cached=job.cached, stage=job.stage,
        batch_id=job.batch_id, idempotency_key=job.idempotency_key, sha256=job.sha256)


def job_from_pb(msg: jpb.Job) -> Job:
    return Job(
        id=msg.id, state=state_from_pb(msg.state), spec=spec_from_pb(msg.spec), outputs=list(msg.outputs),
        error=msg.error, attempts=msg.attempts, agent=msg.agent, post_agent=msg.post_agent,
        created=msg.created_unix, started=msg.started_unix or None, finished=msg.finished_unix or None,
        cached=msg.cached, stage=msg.stage, batch_id=msg.batch_id, idempotency_key=msg.idempotency_key,
        sha256=list(msg.sha256))


def jobs_page(rows: list[tuple[int, Job]], more: bool, max_bytes: int) -> jpb.ListJobsReply:
    """The (seq, job) rows that fit in `max_bytes` (always one), and a token to continue after the last sent."""
    reply = jpb.ListJobsReply()
    size = 0
    for i, (_seq, job) in enumerate(rows):
        msg = job_to_pb(job)
        size += msg.ByteSize() + 6  # the field's tag and length
        if reply.jobs and size > max_bytes:
            reply.next_page_token = page_token(rows[i - 1][0])
            return reply
        reply.jobs.append(msg)
    if more and rows:
        reply.next_page_token = page_token(rows[-1][0])
    return reply


def page_token(seq: int) -> str:
    """Where the next page starts: below this submission number (stable while new jobs arrive)."""
    return f"before-{seq}"


def page_after(token: str) -> int:
    """The submission number a page token names (0: no token, start at the newest)."""
    if not token:
        return 0
    prefix, _, seq = token.partition("-")
    if prefix != "before" or not seq.isdigit() or int(seq) <= 0:
        raise RequestError(f"page_token {token[:40]!r} is not one this coordinator gave out")
    return int(seq)


def event_to_pb(ev: JobEvent) -> jpb.JobEvent:
    msg = jpb.JobEvent(job_id=ev.job_id, seq=ev.seq, time_unix=ev.time, kind=ev.kind, state=state_to_pb(ev.state),
                       stage=ev.stage, step=ev.step, total=ev.total, message=ev.message, agent=ev.agent)
    if ev.job is not None:
        msg.job.CopyFrom(job_to_pb(ev.job))
    return msg


def event_from_pb(msg: jpb.JobEvent) -> JobEvent:
    return JobEvent(job_id=msg.job_id, kind=msg.kind or "info", state=state_from_pb(msg.state),  # type: ignore[arg-type]
                    stage=msg.stage, step=msg.step, total=msg.total, message=msg.message, agent=msg.agent,
                    time=msg.time_unix, seq=msg.seq, job=job_from_pb(msg.job) if msg.HasField("job") else None)

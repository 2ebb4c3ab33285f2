"""Jobs and their events as Python values, and their translation to and from jobs.proto."""

from __future__ import annotations

from dataclasses import dataclass

from artifex_agent.coordinator.job import TERMINAL as TERMINAL
from artifex_agent.coordinator.job import Job, JobState
from artifex_agent.errors import RequestError
from artifex_agent.jobspec_pb import spec_from_pb as spec_from_pb
from artifex_agent.jobspec_pb import spec_to_pb as spec_to_pb
from artifex_agent.proto.artifex.v1 import jobs_pb2 as jpb
from artifex_agent.vocabulary import EventKind
from artifex_agent.wire_enums import EVENT_KIND, JOB_STATE, stage_from_pb, stage_to_pb


@dataclass
class JobEvent:
    """Something that happened to a job: a state change, a progress step, a retry."""

    job_id: str
    kind: EventKind
    state: JobState
    stage: str = ""
    step: int = 0
    total: int = 0
    message: str = ""
    agent: str = ""
    time: float = 0.0
    seq: int = 0
    job: Job | None = None
    # Watch's first event: the job as it is now, not a change (jobs.proto JobEvent.snapshot).
    snapshot: bool = False
    # A progress event (or a snapshot): the newest live preview (docs/previews.md); never stored.
    preview: bytes = b""
    preview_mime: str = ""
    preview_step: int = 0
    # A progress event: seconds left for the reporting agent's part of the job (0: not known).
    eta_s: float = 0.0


def state_to_pb(state: str) -> jpb.JobState:
    """A job state (coordinator/job.py's words) as jobs.proto's JobState."""
    return JOB_STATE.to_pb(state)  # type: ignore[no-any-return]


def state_from_pb(value: int) -> JobState:
    """jobs.proto's JobState as the coordinator's word; UNSPECIFIED or unknown: RequestError."""
    return JOB_STATE.from_pb(value)


def job_to_pb(job: Job) -> jpb.Job:
    return jpb.Job(
        id=job.id, state=state_to_pb(job.state), spec=spec_to_pb(job.spec, image_data=False), outputs=job.outputs,
        error=job.error,
        attempts=job.attempts, agent=job.agent, post_agent=job.post_agent, created_unix=job.created,
        started_unix=job.started or 0.0, finished_unix=job.finished or 0.0, cached=job.cached,
        current_stage=stage_to_pb(job.stage), batch_id=job.batch_id, idempotency_key=job.idempotency_key,
        sha256=job.sha256, waiting=job.waiting, expected_start_unix=job.expected_start or 0.0, queued_s=job.queued_s,
        expected_end_unix=job.expected_end or 0.0)


def job_from_pb(msg: jpb.Job) -> Job:
    return Job(
        id=msg.id, state=state_from_pb(msg.state), spec=spec_from_pb(msg.spec, check=False),
        outputs=list(msg.outputs),
        error=msg.error, attempts=msg.attempts, agent=msg.agent, post_agent=msg.post_agent,
        created=msg.created_unix, started=msg.started_unix or None, finished=msg.finished_unix or None,
        cached=msg.cached, stage=stage_from_pb(msg.current_stage), batch_id=msg.batch_id,
        idempotency_key=msg.idempotency_key, sha256=list(msg.sha256), waiting=msg.waiting,
        expected_start=msg.expected_start_unix or None, queued_s=msg.queued_s,
        expected_end=msg.expected_end_unix or None)


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
    msg = jpb.JobEvent(job_id=ev.job_id, seq=ev.seq, time_unix=ev.time, event_kind=EVENT_KIND.to_pb(ev.kind),
                       state=state_to_pb(ev.state), current_stage=stage_to_pb(ev.stage), step=ev.step, total=ev.total,
                       message=ev.message, agent=ev.agent, snapshot=ev.snapshot, preview=ev.preview,
                       preview_mime=ev.preview_mime, preview_step=ev.preview_step, eta_s=ev.eta_s)
    if ev.job is not None:
        msg.job.CopyFrom(job_to_pb(ev.job))
    return msg


def event_from_pb(msg: jpb.JobEvent) -> JobEvent:
    return JobEvent(job_id=msg.job_id, kind=EVENT_KIND.from_pb(msg.event_kind), state=state_from_pb(msg.state),
                    stage=stage_from_pb(msg.current_stage), step=msg.step, total=msg.total, message=msg.message,
                    agent=msg.agent, time=msg.time_unix, seq=msg.seq,
                    job=job_from_pb(msg.job) if msg.HasField("job") else None, snapshot=msg.snapshot,
                    preview=msg.preview, preview_mime=msg.preview_mime, preview_step=msg.preview_step,
                    eta_s=msg.eta_s)

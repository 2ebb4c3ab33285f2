"""A job as the coordinator knows it, its states, and the only moves between them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from artifex_agent.jobspec import JobSpec
from artifex_agent.vocabulary import JOB_STATES, JobState
from artifex_agent.vocabulary import TERMINAL as TERMINAL

# The states are vocabulary (wire_enums maps jobs.proto's JobState to them); the moves between them are here.
STATES: tuple[JobState, ...] = JOB_STATES

# Every move a job can make: the states it may make it from, and the state it ends in.
MOVES: dict[str, tuple[frozenset[JobState], JobState]] = {
    "start": (frozenset({"queued"}), "running"),
    "finish": (frozenset({"running"}), "done"),
    "finish_from_cache": (frozenset({"queued"}), "done"),
    "fail": (frozenset({"running"}), "failed"),
    "retry_later": (frozenset({"running"}), "queued"),
    "requeue": (frozenset({"running"}), "queued"),
    "retry": (frozenset({"failed", "cancelled"}), "queued"),
    "cancel": (frozenset({"queued", "running"}), "cancelled"),
}
# The legal (from, to) pairs; anything else is a bug in the caller.
TRANSITIONS: frozenset[tuple[JobState, JobState]] = frozenset(
    (source, target) for sources, target in MOVES.values() for source in sources)


class IllegalTransition(RuntimeError):
    """A job was asked to make a move its state does not allow (a coordinator bug)."""


@dataclass
class Job:
    """A job as the coordinator knows it."""

    id: str
    state: JobState
    spec: JobSpec
    outputs: list[str] = field(default_factory=list)
    error: str = ""
    attempts: int = 0
    agent: str = ""
    post_agent: str = ""
    created: float = 0.0
    started: float | None = None
    finished: float | None = None
    cached: bool = False
    stage: str = ""
    batch_id: str = ""
    idempotency_key: str = ""
    sha256: list[str] = field(default_factory=list)
    # Seconds spent queued, over every attempt until the current one started (the rest is started..finished).
    queued_s: float = 0.0
    # While queued: why it has not started (coordinator/waiting.py), and when it should (None: unknown).
    waiting: str = ""
    expected_start: float | None = None
    # While running: when it should end, from its agents' last progress (eta_s); None: not known. Not stored.
    expected_end: float | None = None

    @classmethod
    def submitted(cls, job_id: str, spec: JobSpec, now: float, idempotency_key: str = "") -> Job:
        """A new job, queued."""
        return cls(id=job_id, state="queued", spec=spec, created=now, stage="queued", idempotency_key=idempotency_key)

    @property
    def terminal(self) -> bool:
        """Done, failed or cancelled: nothing more will happen without a retry."""
        return self.state in TERMINAL

    @property
    def ok(self) -> bool:
        return self.state == "done"

    def copy(self) -> Job:
        return dataclasses.replace(self, outputs=list(self.outputs), sha256=list(self.sha256))

    def why_waiting(self, now: float) -> str:
        """The wait reason with the time left to its expected start ("..., starts in 27 s"); "" when none."""
        if not self.waiting:
            return ""
        if self.expected_start is None:
            return self.waiting
        return f"{self.waiting}, starts in {max(self.expected_start - now, 0.0):.0f} s"

    # ------------------------------------------------------------------ transitions

    def _move(self, move: str, stage: str) -> None:
        sources, target = MOVES[move]
        if self.state not in sources:
            raise IllegalTransition(f"job {self.id} is {self.state}: it cannot {move.replace('_', ' ')} "
                                    f"(only a {' or '.join(sorted(sources))} job can)")
        self.state, self.stage = target, stage
        self.waiting, self.expected_start = "", None  # the scheduler says again while it stays queued
        self.expected_end = None  # its agents say again while it runs

    def start(self, agent: str, post_agent: str, batch_id: str, now: float, waited: float = 0.0) -> None:
        """Queued → running on `agent`, post-processed on `post_agent`; counts an attempt and its `waited` seconds."""
        self._move("start", "generating")
        self.started, self.finished = now, None
        self.queued_s += max(waited, 0.0)
        self.attempts += 1
        self.agent, self.post_agent, self.batch_id = agent, post_agent, batch_id

    def advance(self, stage: str) -> None:
        """A running job moved on to `stage` (generating, streaming, post)."""
        if self.state != "running":
            raise IllegalTransition(f"job {self.id} is {self.state}: only a running job advances (to {stage!r})")
        self.stage = stage

    def finish(self, outputs: list[str], sha256: list[str], now: float) -> None:
        """Running → done with its outputs."""
        self._move("finish", "done")
        self.outputs, self.sha256, self.finished, self.error = outputs, sha256, now, ""

    def finish_from_cache(self, outputs: list[str], sha256: list[str], now: float) -> None:
        """Queued → done without running: an identical job's outputs from the results cache."""
        self._move("finish_from_cache", "done")
        self.cached, self.outputs, self.sha256 = True, outputs, sha256
        self.started = self.started or now
        self.finished = now

    def fail(self, error: str, now: float) -> None:
        """Running → failed for good."""
        self._move("fail", "failed")
        self.error, self.finished = error, now

    def retry_later(self, error: str) -> None:
        """Running → queued, waiting out a backoff after a failed attempt."""
        self._move("retry_later", "waiting")
        self.error = error

    def requeue(self) -> None:
        """Running → queued because its run was interrupted: the attempt does not count."""
        self._move("requeue", "queued")
        self.attempts = max(self.attempts - 1, 0)

    def retry(self) -> None:
        """Failed or cancelled → queued afresh (a client asked): attempts and error reset."""
        self._move("retry", "queued")
        self.attempts, self.error, self.queued_s = 0, "", 0.0
        self.started = self.finished = None

    def cancel(self, now: float) -> None:
        """Queued or running → cancelled."""
        self._move("cancel", "cancelled")
        self.finished = now

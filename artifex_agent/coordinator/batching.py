"""Queue entries, and grouping compatible ones into one pipeline call."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from artifex_agent.coordinator.messages import Job


@dataclass
class QueueEntry:
    """A queued or running job as the scheduler holds it in memory (the store holds the truth)."""

    job: Job
    seq: int
    content_key: str
    # When it (re-)entered the queue (wall clock), and when a retry may run at the earliest.
    queued_at: float
    not_before: float = 0.0
    cancel_requested: bool = False
    # The results cache was consulted since it entered the queue (Submit does; a restart does not).
    cache_checked: bool = False
    batch_key: tuple[Any, ...] = field(default_factory=tuple)
    # Running: when its current stage began (wall clock), for the stage-duration metrics.
    stage_since: float = 0.0
    # Queued: the last wait reason its watchers were told (coordinator/waiting.py Wait.key).
    told: str = ""

    def __post_init__(self) -> None:
        if not self.batch_key:
            # A GenerateRequest carries one i2v image: only jobs with the same image share a call.
            self.batch_key = (*self.job.spec.batch_key(), self.job.spec.image)

    @property
    def priority(self) -> int:
        return self.job.spec.priority

    @property
    def clips(self) -> int:
        return len(self.job.spec.prompts)

    def order(self) -> tuple[int, int]:
        """Queue order: higher priority first, then submission order."""
        return (-self.priority, self.seq)


def pick_batch(ready: Sequence[QueueEntry], can_run: Callable[[QueueEntry], bool], *, batch_size: int,
               timeout_s: float, max_clips: int, now: float) -> tuple[list[QueueEntry], float | None]:
    """The next batch an agent should run, and when to look again if none is ready yet.

    `ready` is in queue order. Jobs group by JobSpec.batch_key() only, so incompatible jobs
    never share a call. A group runs when it is full, when its oldest job has waited
    `timeout_s`, or when it holds a job with a raised priority (those jump the queue and do
    not wait for company).
    """
    groups: dict[tuple[Any, ...], list[QueueEntry]] = {}
    for entry in ready:
        if can_run(entry):
            groups.setdefault(entry.batch_key, []).append(entry)
    deadline: float | None = None
    for members in groups.values():  # dicts keep insertion order: the group of the first job first
        batch = _fill(members, batch_size, max_clips)
        oldest = min(e.queued_at for e in members)
        if len(batch) >= batch_size or batch_size <= 1 or len(batch) < len(members) \
                or any(e.priority > 0 for e in batch) or now - oldest >= timeout_s:
            return batch, None
        due = oldest + timeout_s
        deadline = due if deadline is None else min(deadline, due)
    return [], deadline


def _fill(members: list[QueueEntry], batch_size: int, max_clips: int) -> list[QueueEntry]:
    """Members in order while the batch has room for their clips (a lone large job still runs)."""
    batch: list[QueueEntry] = []
    clips = 0
    for entry in members:
        if len(batch) >= batch_size:
            break
        if batch and clips + entry.clips > max_clips:
            break
        batch.append(entry)
        clips += entry.clips
    return batch

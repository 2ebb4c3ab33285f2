"""Post stages retried from the frames their generating agent still holds, without generating again.

When a job's delivery fails because of its post agent (it died, the stream broke) and the
generating agent says it still holds the frames (agent config hold_mib / hold_s), the
job's next attempt only sends them again, to another post-capable agent when one is up.
If the generating agent is gone, or has dropped the frames, the job runs whole again.
"""

from __future__ import annotations

from dataclasses import dataclass

from artifex_agent.coordinator.agents import AgentHandle, AgentPool
from artifex_agent.coordinator.batching import QueueEntry
from artifex_agent.coordinator.pipeline import DeliveryFailed


@dataclass(frozen=True)
class HeldRetry:
    """Where the retry runs: the agent holding the frames, the post agent, and what failed."""

    gen: AgentHandle
    post: AgentHandle
    failed: DeliveryFailed


class HeldRetries:
    """Job id -> its delivery that failed while its frames stayed held."""

    def __init__(self) -> None:
        self._failed: dict[str, DeliveryFailed] = {}

    def note(self, job_id: str, exc: BaseException) -> str:
        """Remember a held delivery for the job's next attempt; what to add to its retry event."""
        if not (isinstance(exc, DeliveryFailed) and exc.held):
            self._failed.pop(job_id, None)
            return ""
        self._failed[job_id] = exc
        return f"; {exc.gen} still holds its frames: only the post stage runs again"

    def forget(self, job_id: str) -> None:
        self._failed.pop(job_id, None)

    def pending(self, job_id: str) -> bool:
        return job_id in self._failed

    def plan(self, pool: AgentPool, entry: QueueEntry) -> HeldRetry | None:
        """Agents for the retry, or None (and forgotten) when it must run whole: the holder is down, no one posts."""
        failed = self._failed.get(entry.job.id)
        if failed is None:
            return None
        gen = next((a for a in pool if a.name == failed.gen and a.up), None)
        capable = [a for a in pool if a.can_post(entry.job.spec)]
        if gen is None or not capable:
            self._failed.pop(entry.job.id, None)
            return None
        # Another agent than the one that failed when one is able; the least busy of them.
        others = [a for a in capable if a.name != failed.agent] or capable
        post = min(others, key=lambda a: (a.posting + a.generating, not a.prefers("post"), a.name))
        return HeldRetry(gen, post, failed)

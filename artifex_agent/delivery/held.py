"""Generated payloads kept after a delivery failed, so its post stage can be retried without generating.

Bounded two ways (AgentConfig hold_mib, hold_s): at most `limit_bytes` in all, the oldest
dropped first to make room, and none longer than `hold_s`. A payload larger than the whole
limit is not kept. Held by job id (the GenerateRequest's job_id).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

from artifex_agent.delivery.payload import Payload
from artifex_agent.errors import ArtifexError

logger = logging.getLogger(__name__)


class NotHeld(ArtifexError):
    """The frames asked for are no longer held (answered FAILED_PRECONDITION: generate again)."""


@dataclass
class _Entry:
    payload: Payload
    until: float


class HeldPayloads:
    """Job id -> payload, oldest first."""

    def __init__(self, limit_bytes: int, hold_s: float) -> None:
        self.limit_bytes = limit_bytes
        self.hold_s = hold_s
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    @property
    def bytes(self) -> int:
        return sum(e.payload.nbytes for e in self._entries.values())

    def put(self, job_id: str, payload: Payload) -> bool:
        """Keep `payload` for `job_id` (replacing an older one); False when it cannot be kept."""
        self.prune()
        self._entries.pop(job_id, None)
        if not job_id or self.hold_s <= 0 or payload.nbytes > self.limit_bytes:
            return False
        while self._entries and self.bytes + payload.nbytes > self.limit_bytes:
            dropped, _ = self._entries.popitem(last=False)
            logger.info("job %s: held frames dropped to make room (hold_mib)", dropped)
        self._entries[job_id] = _Entry(payload, time.monotonic() + self.hold_s)
        return True

    def has(self, job_id: str) -> bool:
        self.prune()
        return job_id in self._entries

    def get(self, job_id: str) -> Payload:
        """The payload held for `job_id`; NotHeld when there is none (never held, dropped, or expired)."""
        self.prune()
        entry = self._entries.get(job_id)
        if entry is None:
            raise NotHeld(f"the frames of job {job_id!r} are no longer held here (kept at most {self.hold_s:g}s and "
                          f"{self.limit_bytes >> 20} MiB: hold_s, hold_mib); generate them again")
        return entry.payload

    def drop(self, job_id: str) -> None:
        self._entries.pop(job_id, None)

    def prune(self) -> None:
        """Forget what has been held longer than hold_s."""
        now = time.monotonic()
        for job_id in [j for j, e in self._entries.items() if e.until <= now]:
            del self._entries[job_id]
            logger.info("job %s: held frames expired (hold_s)", job_id)

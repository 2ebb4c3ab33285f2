"""The newest live preview of each running job, in memory only (docs/previews.md).

A preview is a picture of a clip still denoising: worth showing while it is fresh, worthless once the
job ends. So it never reaches the store (SQLite), only this bounded table: one preview per job, each at
most MAX_BYTES, at most MAX_JOBS jobs (the least recently updated goes first), none older than MAX_AGE_S.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# An agent sends a few small frames (≤ 256 px wide, WebP): tens of KiB. Anything near this is a bug or abuse.
MAX_BYTES = 256 << 10
# More jobs than this previewing at once means stale entries: a dozen agents run a job or a batch each.
MAX_JOBS = 64
# A job that stopped reporting (its agent died, its run is stuck) stops showing a picture after this.
MAX_AGE_S = 600.0


@dataclass(frozen=True)
class Preview:
    """One job's newest preview: the image, its type, the step it shows, a number that changes with it."""

    data: bytes
    mime: str
    step: int
    version: int
    time: float


class PreviewStore:
    """Job id -> its newest Preview, bounded in count, size and age."""

    def __init__(self, max_bytes: int = MAX_BYTES, max_jobs: int = MAX_JOBS, max_age_s: float = MAX_AGE_S) -> None:
        self.max_bytes, self.max_jobs, self.max_age_s = max_bytes, max_jobs, max_age_s
        self._previews: OrderedDict[str, Preview] = OrderedDict()
        # Distinct per put across jobs and attempts: a page's `?v=` changes with every new picture.
        self._versions = itertools.count(1)

    def put(self, job_id: str, data: bytes, mime: str, step: int, now: float | None = None) -> Preview | None:
        """Keep `data` as the job's newest preview; None (nothing kept) when it is empty or too big."""
        if not data:
            return None
        if len(data) > self.max_bytes:
            logger.warning("job %s: a preview of %d bytes is over the %d kept; not shown", job_id, len(data),
                           self.max_bytes)
            return None
        now = time.monotonic() if now is None else now
        preview = Preview(bytes(data), mime, step, next(self._versions), now)
        self._previews[job_id] = preview
        self._previews.move_to_end(job_id)
        self._prune(now)
        return preview

    def get(self, job_id: str, now: float | None = None) -> Preview | None:
        """The job's newest preview, unless there is none or it is too old."""
        self._prune(time.monotonic() if now is None else now)
        return self._previews.get(job_id)

    def drop(self, job_id: str) -> None:
        """The job ended (or went back to the queue): its picture is no longer what it is doing."""
        self._previews.pop(job_id, None)

    def __len__(self) -> int:
        return len(self._previews)

    @property
    def bytes_held(self) -> int:
        return sum(len(p.data) for p in self._previews.values())

    def _prune(self, now: float) -> None:
        while len(self._previews) > self.max_jobs:
            self._previews.popitem(last=False)
        # Oldest-updated first: stop at the first fresh one.
        while self._previews:
            job_id, oldest = next(iter(self._previews.items()))
            if now - oldest.time <= self.max_age_s:
                break
            del self._previews[job_id]

"""Time left for a job on this agent: its measured step time and what the work after the steps cost lately.

The steps are timed as they happen (no guess before the second one); the work after them
(the VAE decode today; upscale and encode where the agent records them) is taken from the
last few jobs of the same kind and size on this agent, or scaled from the nearest size.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Callable

KEEP = 8  # recent runs kept per kind and size
WINDOW = 16  # step times averaged: recent enough to follow a change of load, enough to smooth jitter


class CostHistory:
    """Seconds that recent jobs on this agent spent after denoising, by kind ("decode"...) and size."""

    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self._runs: dict[tuple[str, int, int, int], deque[float]] = {}
        self._lock = threading.Lock()

    def record(self, kind: str, width: int, height: int, frames: int, seconds: float) -> None:
        """One run of `kind` on `frames` frames (all clips of a batch) at width x height."""
        with self._lock:
            runs = self._runs.setdefault((kind, width, height, frames), deque(maxlen=self.keep))
            runs.append(seconds)

    def predict(self, kind: str, width: int, height: int, frames: int) -> float | None:
        """The median of recent runs of this size; else the nearest size's, scaled by pixels; None: never ran."""
        with self._lock:
            exact = self._runs.get((kind, width, height, frames))
            if exact:
                return statistics.median_low(exact)
            wanted = width * height * frames
            sizes = [(w * h * f, runs) for (k, w, h, f), runs in self._runs.items() if k == kind and runs]
            if not sizes or wanted <= 0:
                return None
            pixels, runs = min(sizes, key=lambda s: abs(s[0] - wanted))
            return statistics.median_low(runs) * wanted / pixels


class EtaClock:
    """Seconds left: the remaining steps at the mean time of the last WINDOW steps, plus `after_s`."""

    def __init__(self, after_s: float = 0.0, clock: Callable[[], float] = time.monotonic,
                 window: int = WINDOW) -> None:
        self.after_s = after_s
        self.clock = clock
        self._marks: deque[tuple[int, float]] = deque(maxlen=window + 1)

    def step(self, step: int, total: int) -> float:
        """Step `step` of `total` is done now; the estimate (0.0: not known before a second step)."""
        now = self.clock()
        if self._marks and step <= self._marks[-1][0]:
            self._marks.clear()  # a new part of the job (a resumed split) starts its own count
        # The first report (a part's start, or step 1) only marks the start: what came before
        # (loading, prompts) is not denoising time.
        self._marks.append((step, now))
        if len(self._marks) < 2:
            return 0.0 if step < total else self.after_s
        first_step, first_time = self._marks[0]
        per_step = (now - first_time) / (step - first_step)
        return max(total - step, 0) * per_step + self.after_s

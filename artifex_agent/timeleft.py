"""A job's time left, worded the same in every progress view (jobs, submit --wait, top, the web page).

The estimate itself is the agents' (Progress.eta_s: measured step time, remaining steps, recent decode,
upscale and encode costs; docs/previews.md); the coordinator turns it into the job's expected end.
"""

from __future__ import annotations

from artifex_agent.coordinator.job import Job


def fmt_seconds(seconds: float | None) -> str:
    """"42 s", "3 min 05 s", "1 h 02 min"; empty for None or a negative time."""
    if seconds is None or seconds < 0:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds // 60 % 60:02d} min"


def seconds_left(job: Job, now: float) -> float | None:
    """A running job's seconds to its expected end (None: not running, or no agent has estimated it yet)."""
    if job.state != "running" or job.expected_end is None:
        return None
    return max(job.expected_end - now, 0.0)


def left(job: Job, now: float) -> str:
    """"3 min 05 s left" for a running job with an estimate; empty otherwise."""
    seconds = seconds_left(job, now)
    return left_text(seconds) if seconds is not None else ""


def left_text(seconds: float) -> str:
    """An estimate as every view words it: "1 min 05 s left"."""
    return f"{fmt_seconds(seconds)} left"

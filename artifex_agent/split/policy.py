"""`--split auto`: which way to run a job across the two PCs, from what the coordinator knows now.

- One job and nothing else waiting (or the job is urgent): latency is what counts. With
  guidance > 1, CFG-parallel runs both passes of every step at once (about 2x faster on
  one clip); an expert split would not help one clip, its two stages run one after the other.
- A queue of at least `queue_threshold` jobs: throughput is what counts. Two-expert
  models run as an expert split, the stages of consecutive jobs overlapping (PC1 on job
  N+1's high-noise steps while PC2 runs job N's low-noise steps), so each GPU keeps one
  expert and never swaps; other models run whole, one job per PC.
- Fewer than two agents that can generate, or an image-to-video job: whole.
"""

from __future__ import annotations

from dataclasses import dataclass

from artifex_agent.split.client import Mode


@dataclass(frozen=True)
class SplitChoice:
    """The mode and why, for the job's events."""

    mode: Mode
    reason: str


def choose_split(*, two_experts: bool, guidance: float, queue_depth: int, generators: int, urgent: bool = False,
                 image_to_video: bool = False, queue_threshold: int = 2) -> SplitChoice:
    """The split mode for one job. `queue_depth` counts the jobs waiting or running, this one included."""
    if generators < 2:
        return SplitChoice("none", "only one agent can generate")
    if image_to_video:
        return SplitChoice("none", "image-to-video jobs run whole")
    if urgent or queue_depth < queue_threshold:
        if guidance > 1.0:
            return SplitChoice("cfg", "a single job: conditional and unconditional passes on both PCs at once")
        return SplitChoice("none", "a single job without guidance: nothing to run in parallel")
    if two_experts:
        return SplitChoice("experts", f"{queue_depth} jobs queued: high-noise expert on one PC, low-noise on the other")
    return SplitChoice("none", f"{queue_depth} jobs queued: one whole job per PC")

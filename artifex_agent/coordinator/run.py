"""A run: one batch (or one split, post-only or held-frames job) on its way through its agents."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from artifex_agent.coordinator.agents import AgentHandle
from artifex_agent.coordinator.batching import QueueEntry
from artifex_agent.coordinator.pipeline import DeliveryFailed


@dataclass
class Run:
    """One batch on its way through a generating and a post-processing agent."""

    batch_id: str
    entries: list[QueueEntry]
    gen: AgentHandle
    post: AgentHandle
    task: asyncio.Task[None] | None = None
    gen_released: bool = False
    posting: bool = False
    finishing: bool = False
    started: float = field(default_factory=time.time)
    # A post stage again from frames the generating agent holds (coordinator/held_retry.py); None: a whole run.
    retry: DeliveryFailed | None = None
    # (monotonic time, stage, last step?) of the last progress event published.
    last_progress: tuple[float, str, bool] = (0.0, "", False)

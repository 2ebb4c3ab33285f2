"""The engine's side of the memory plan: its GPU budget, a plan per job, and a log of the plan's misses.

`engines.memplan` holds the arithmetic (weights, activations, VAE decode per policy); this module
feeds it what the engine knows (the model folder's headers, the request, the GPU's free memory)
and turns its answer into a placement to load with, or a RESOURCE_EXHAUSTED refusal before
anything loads.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from artifex_agent.engines.gpu import memory_budget
from artifex_agent.engines.models import ModelEntry
from artifex_agent.engines.placement import Placement
from artifex_agent.errors import ResourceError

if TYPE_CHECKING:
    from artifex_agent.engines.generation import GenerationRequest

logger = logging.getLogger(__name__)

GIB = 1024**3
# Room kept free beside the text encoder when it encodes on the GPU (its activations, the allocator's slack).
ENCODE_HEADROOM = 1 * GIB


@dataclass
class JobPlan:
    """What the plan says for one job: the placement to use, and which others would also fit."""

    choice: Placement
    fitting: list[Placement]
    # Placement -> whether its VAE decode must be tiled to fit.
    tiled: dict[Placement, bool] = field(default_factory=dict)
    budget_bytes: int = 0
    estimates: dict[Placement, int] = field(default_factory=dict)
    detail: Any = None

    def tile_vae_for(self, placement: Placement) -> bool:
        return self.tiled.get(placement, False)


class JobPlanner:
    """Plans jobs against this agent's GPU budget; without a GPU or a configured budget, nothing is refused."""

    def __init__(self, device: torch.device, dtype: torch.dtype, *, fraction: float = 0.0,
                 budget_gib: float = 0.0) -> None:
        self.device = device
        self.dtype = dtype
        self.fraction = fraction
        self.budget_gib = budget_gib

    def budget(self) -> int:
        """Bytes a job may use now: the configured budget, else the GPU's (0: unknown, plan nothing)."""
        if self.budget_gib:
            return int(self.budget_gib * GIB)
        if self.device.type == "cuda":
            return memory_budget(self.device, self.fraction)[0]
        return 0

    def plan(self, entry: ModelEntry, req: GenerationRequest | None, allowed: list[Placement], *,
             experts: frozenset[str] | None = None) -> JobPlan:
        """The fastest allowed placement that fits `req`, or ResourceError naming what would fit."""
        budget = self.budget()
        if not budget or req is None:
            return JobPlan(choice=allowed[0], fitting=list(allowed), budget_bytes=budget)
        return self._plan(entry, req, allowed, budget, experts)

    def default_placement(self, entry: ModelEntry, allowed: list[Placement]) -> Placement:
        """Placement for a load without a job (prefetch, preload): the fastest whose weights alone fit."""
        budget = self.budget()
        if not budget:
            return allowed[0]
        for placement in allowed:
            if self._weights_bytes(entry, placement) <= budget:
                return placement
        return allowed[-1]

    def encode_device(self, encoder_bytes: int) -> torch.device:
        """The GPU when the text encoder fits beside what is allocated now, else the CPU."""
        if self.device.type != "cuda":
            return torch.device("cpu")
        budget = self.budget()
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        in_use = torch.cuda.memory_allocated(index)
        if budget and in_use + encoder_bytes + ENCODE_HEADROOM <= budget:
            return self.device
        logger.info("text encoder (%.1f GiB) encodes on the CPU: the GPU has %.1f GiB free of its budget",
                    encoder_bytes / GIB, max(budget - in_use, 0) / GIB)
        return torch.device("cpu")

    # Filled in with engines.memplan below.
    def _plan(self, entry: ModelEntry, req: GenerationRequest, allowed: list[Placement], budget: int,
              experts: frozenset[str] | None) -> JobPlan:
        raise NotImplementedError

    def _weights_bytes(self, entry: ModelEntry, placement: Placement) -> int:
        raise NotImplementedError


class MissLog:
    """Out-of-memory errors the plan did not foresee, one JSON line each, to check the estimates against."""

    def __init__(self, file: Path | None) -> None:
        self.file = file
        self._lock = threading.Lock()

    def record(self, plan: JobPlan, placement: Placement, message: str) -> None:
        line = {
            "time": time.time(),
            "placement": placement.label,
            "estimated_peak_bytes": plan.estimates.get(placement, 0),
            "budget_bytes": plan.budget_bytes,
            "error": message[:500],
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            line["max_allocated_bytes"] = torch.cuda.max_memory_allocated()
        logger.warning("memory plan miss: %s", line)
        if self.file is None:
            return
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            with self._lock, self.file.open("a", encoding="utf-8") as out:
                out.write(json.dumps(line) + "\n")
        except OSError as exc:
            logger.warning("cannot record the memory plan miss in %s: %s", self.file, exc)


__all__ = ["JobPlan", "JobPlanner", "MissLog", "ResourceError"]

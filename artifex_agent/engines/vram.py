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
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from artifex_agent.engines import memplan, memshapes, weights
from artifex_agent.engines.gpu import memory_budget
from artifex_agent.engines.models import ModelEntry
from artifex_agent.engines.placement import EXPERTS, Placement
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
                 budget_gib: float = 0.0, vae_tiling: bool | str = "auto") -> None:
        self.device = device
        self.dtype = dtype
        self.fraction = fraction
        self.budget_gib = budget_gib
        self.vae_tiling = vae_tiling

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

    def model_plan(self, entry: ModelEntry, req: GenerationRequest, placements: list[Placement], budget: int,
                   experts: frozenset[str] | None = None, *, suggest: bool = False) -> dict[bool, memplan.Plan]:
        """memplan's plan for each weight storage (native, fp8) that `placements` use, keyed by fp8."""
        model = _model_shape(entry.path)
        names = [n for n in EXPERTS[: len(model.experts)]]
        if experts:
            keep = [i for i, n in enumerate(names) if n in experts]
            model = replace(model, experts=tuple(model.experts[i] for i in keep))
            names = [names[i] for i in keep]
        job = self.job_shape(entry, req)
        files = weights.expert_files(entry.path)
        plans: dict[bool, memplan.Plan] = {}
        for fp8 in sorted({p.fp8 for p in placements}):
            shapes = zip(names, model.experts, strict=True)
            if fp8:
                ws = [memshapes.ExpertWeights.fp8(shape, job.compute_bytes) for _, shape in shapes]
            else:
                ws = [_file_weights(files.get(name), shape, job.compute_bytes) for name, shape in shapes]
            policies = [p.policy for p in placements if p.fp8 == fp8]
            plans[fp8] = memplan.plan(model, job, ws, budget_bytes=budget, vae_tiling=self.vae_tiling,  # type: ignore[arg-type]
                                      policies=policies, suggest=suggest)
        return plans

    def job_shape(self, entry: ModelEntry, req: GenerationRequest) -> memshapes.JobShape:
        guidance = max(float(req.guidance_scale), float(req.guidance_scale_2 or req.guidance_scale))
        encode = 0
        if req.task == "i2v":
            # A14B i2v encodes the image with zero frames after it (the whole clip); TI2V only the image.
            encode = req.num_frames if entry.kind == "i2v" else 1
        return memshapes.JobShape(
            width=req.width, height=req.height, frames=req.num_frames, batch=len(req.prompts), cfg=guidance > 1.0,
            compute_bytes=torch.finfo(self.dtype).bits // 8, vae_bytes=4, encode_frames=encode,
        )  # fmt: skip

    def _plan(self, entry: ModelEntry, req: GenerationRequest, allowed: list[Placement], budget: int,
              experts: frozenset[str] | None) -> JobPlan:
        plans = self.model_plan(entry, req, allowed, budget, experts)
        fitting: list[Placement] = []
        tiled: dict[Placement, bool] = {}
        estimates: dict[Placement, int] = {}
        for placement in allowed:
            est = plans[placement.fp8].estimate_for(placement.policy)
            tiled[placement] = est.vae_tiled
            estimates[placement] = est.peak_bytes
            if est.fits:
                fitting.append(placement)
        if not fitting:
            # Suggestions for the weights this agent would rather use (native unless only fp8 is allowed).
            refusal = self.model_plan(entry, req, allowed[:1], budget, experts, suggest=True)[allowed[0].fp8].refusal()
            tried = ", ".join(p.label for p in allowed)
            raise ResourceError(f"{req.model}: {refusal} (placements tried: {tried})")
        choice = fitting[0]
        logger.info("memory plan for %s %dx%d x%d: %s, peak %.1f GiB of %.1f GiB%s", req.model, req.width,
                    req.height, req.num_frames, choice.label, estimates[choice] / GIB, budget / GIB,
                    ", tiled VAE" if tiled[choice] else "")
        return JobPlan(choice=choice, fitting=fitting, tiled=tiled, budget_bytes=budget, estimates=estimates,
                       detail=plans)

    def _weights_bytes(self, entry: ModelEntry, placement: Placement) -> int:
        """Peak of a one-frame job at the smallest size: the weights a placement keeps resident, near enough."""
        from artifex_agent.engines.generation import GenerationRequest

        model = _model_shape(entry.path)
        side = model.size_multiple
        req = GenerationRequest(model=entry.name, prompts=["x"], width=side, height=side, num_frames=1)
        plans = self.model_plan(entry, req, [placement], 0)
        return plans[placement.fp8].estimate_for(placement.policy).peak_bytes


@lru_cache(maxsize=32)
def _shape_cached(folder: str, stamp: float) -> memshapes.ModelShape:
    return memshapes.shapes_from_folder(Path(folder))


def _model_shape(folder: Path) -> memshapes.ModelShape:
    """The planner's view of a model folder, re-read when its model_index.json changes."""
    return _shape_cached(str(folder), (folder / "model_index.json").stat().st_mtime)


def _file_weights(file: Path | None, shape: memshapes.TransformerShape, compute_bytes: int) -> memshapes.ExpertWeights:
    """An expert's weights as stored: a GGUF file's quantized bytes, else the compute dtype."""
    if file is not None and file.suffix.lower() == ".gguf":
        return memshapes.ExpertWeights.gguf_file(shape, file, compute_bytes)
    return memshapes.ExpertWeights.native(shape, compute_bytes)


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

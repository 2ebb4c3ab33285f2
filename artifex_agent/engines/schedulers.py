"""Per-job scheduler, flow shift and expert boundary: built from the model's scheduler config, undone after the job."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

from artifex_agent.errors import RequestError
from artifex_agent.lora_ref import check_scheduler


def check(scheduler: str, shift: float | None, boundary_ratio: float | None, *, two_experts: bool,
          model: str) -> None:
    """Refuse a scheduler name, shift or boundary that no job could use."""
    check_scheduler(scheduler)
    if shift is not None and not (isinstance(shift, (int, float)) and math.isfinite(shift) and 0 < shift <= 100):
        raise RequestError(f"shift must be within (0, 100], got {shift!r}")
    if boundary_ratio is not None:
        if not two_experts:
            raise RequestError(f"boundary_ratio applies to two-expert models only; {model} has one")
        if not (isinstance(boundary_ratio, (int, float)) and 0 <= boundary_ratio <= 1):
            raise RequestError(f"boundary_ratio must be within 0..1, got {boundary_ratio!r}")


def build(config: Any, scheduler: str, shift: float | None) -> Any | None:
    """The job's scheduler from the model's scheduler config, or None when the job keeps the model's own."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    if scheduler == "euler":
        # The model's flow shift unless the job names one (Wan's UniPC config calls it flow_shift).
        own = config.get("flow_shift", config.get("shift", 1.0))
        return FlowMatchEulerDiscreteScheduler.from_config(config, shift=float(own if shift is None else shift))
    if scheduler == "unipc":
        return UniPCMultistepScheduler.from_config(config, **({} if shift is None else {"flow_shift": float(shift)}))
    if shift is not None:
        key = "flow_shift" if "flow_shift" in config else "shift"
        return type_of(config).from_config(config, **{key: float(shift)})
    return None


def type_of(config: Any) -> Any:
    """The scheduler class a config names."""
    import diffusers

    name = str(config.get("_class_name", ""))
    cls = getattr(diffusers, name, None) if name.endswith("Scheduler") else None
    if cls is None:
        raise RequestError(f"the model names an unknown scheduler {name!r}")
    return cls


@contextlib.contextmanager
def override(pipe: Any, scheduler: str, shift: float | None, boundary_ratio: float | None) -> Iterator[None]:
    """Run `pipe` with the job's scheduler and expert boundary, then put the model's own back."""
    own_scheduler = pipe.scheduler
    own_boundary = pipe.config.get("boundary_ratio")
    replacement = build(own_scheduler.config, scheduler, shift)
    try:
        if replacement is not None:
            pipe.scheduler = replacement
        if boundary_ratio is not None:
            pipe.register_to_config(boundary_ratio=float(boundary_ratio))
        yield
    finally:
        if replacement is not None:
            pipe.scheduler = own_scheduler
        if boundary_ratio is not None:
            pipe.register_to_config(boundary_ratio=own_boundary)

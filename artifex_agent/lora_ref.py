"""Which LoRA a job applies, how strongly, and to which expert: plain data shared by jobs, wire and engine."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from artifex_agent.errors import RequestError
from artifex_agent.vocabulary import MAX_NAME_BYTES

Expert = Literal["both", "high", "low"]
EXPERTS: tuple[Expert, ...] = ("both", "high", "low")
# Beyond +-4 a LoRA only burns the image; negative strengths are a known trick (inverting a style).
MIN_STRENGTH, MAX_STRENGTH = -4.0, 4.0
MAX_LORAS = 8
# Per-job schedulers: "" keeps the model's own (UniPC for Wan2.2); "euler" is flow-match Euler,
# which the step-distilled (Lightning/lightx2v) LoRAs were trained with.
SCHEDULERS = ("", "unipc", "euler")


@dataclass(frozen=True)
class LoraRef:
    """A LoRA file under models_root/loras/ (`name` without .safetensors), a strength, and the expert(s) it applies to.

    high: the high-noise expert (`transformer`); low: the low-noise expert (`transformer_2`);
    both: every transformer the model has (the only choice on one-expert models).
    """

    name: str
    strength: float = 1.0
    expert: Expert = "both"

    @classmethod
    def parse(cls, text: str) -> LoraRef:
        """NAME[:STRENGTH[:high|low|both]], as `submit --lora` and job files write it."""
        parts = str(text).strip().split(":")
        if not parts[0] or len(parts) > 3:
            raise RequestError(f"LoRA {text!r}: write NAME[:STRENGTH[:high|low|both]]")
        strength = 1.0
        if len(parts) > 1 and parts[1] != "":
            try:
                strength = float(parts[1])
            except ValueError:
                raise RequestError(f"LoRA {text!r}: strength {parts[1]!r} is not a number") from None
        expert = parts[2] if len(parts) > 2 else "both"
        ref = cls(parts[0], strength, expert)  # type: ignore[arg-type]
        ref.validate()
        return ref

    def validate(self) -> None:
        """Refuse what no agent could apply: names with folders, bad strengths, unknown experts."""
        if not self.name or "/" in self.name or "\\" in self.name or self.name.startswith(".") or "\x00" in self.name:
            raise RequestError(f"LoRA name {self.name!r} must be a file name under loras/, without folders")
        if len(self.name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise RequestError(f"a LoRA name is longer than {MAX_NAME_BYTES} bytes")
        if not math.isfinite(self.strength) or not MIN_STRENGTH <= self.strength <= MAX_STRENGTH:
            raise RequestError(f"LoRA {self.name!r}: strength {self.strength} is outside "
                               f"{MIN_STRENGTH}..{MAX_STRENGTH}")
        if self.expert not in EXPERTS:
            raise RequestError(f"LoRA {self.name!r}: expert {self.expert!r} is not one of {', '.join(EXPERTS)}")

    def __str__(self) -> str:
        return f"{self.name}:{self.strength:g}:{self.expert}"


def check_loras(loras: tuple[LoraRef, ...] | list[LoraRef]) -> None:
    """Validate every reference and the count; one name may appear once per expert."""
    if len(loras) > MAX_LORAS:
        raise RequestError(f"{len(loras)} LoRAs; at most {MAX_LORAS} per job")
    seen: set[tuple[str, str]] = set()
    for ref in loras:
        ref.validate()
        for expert in (("high", "low") if ref.expert == "both" else (ref.expert,)):
            if (ref.name, expert) in seen:
                raise RequestError(f"LoRA {ref.name!r} is named twice for the {expert}-noise expert")
            seen.add((ref.name, expert))


def check_scheduler(name: str) -> None:
    if name not in SCHEDULERS:
        raise RequestError(f"scheduler {name!r} is not one of: unipc, euler (empty: the model's own)")

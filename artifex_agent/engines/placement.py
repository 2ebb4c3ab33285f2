"""Where a pipeline's weights live: the offload policies, fp8 weight storage and the attention kernel.

Every policy is diffusers' own (model offload, group offloading with CUDA streams, accelerate's
sequential offload); this module only names them, checks the settings and applies one to a
loaded pipeline. The text encoder is not placed here: it is detached from the pipeline and
held by `engines.prompts.PromptEncoder`, so it never stays on the GPU beside an expert.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Any

import torch

from artifex_agent.engines.choices import (
    ATTENTION_CHOICES,
    OFFLOAD_CHOICES,
    POLICIES,
    STORAGE_CHOICES,
    check_choice,
)
from artifex_agent.errors import ConfigError

__all__ = ["ATTENTION_CHOICES", "OFFLOAD_CHOICES", "POLICIES", "STORAGE_CHOICES", "check_choice"]

logger = logging.getLogger(__name__)

# The kernel library each non-native attention backend imports.
ATTENTION_LIBRARIES = {"flash": "flash_attn", "sage": "sageattention"}
EXPERTS = ("transformer", "transformer_2")
FP8_STORAGE = torch.float8_e4m3fn


@dataclass(frozen=True)
class Placement:
    """One way to hold a model: an offload policy, and whether expert weights are stored in fp8."""

    policy: str = "none"
    fp8: bool = False

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigError(f"offload policy {self.policy!r} is not one of {', '.join(POLICIES)}")

    @property
    def label(self) -> str:
        return f"{self.policy}+fp8" if self.fp8 else self.policy


def check_attention(backend: str) -> None:
    """Fail at start-up, not mid-job, when the asked-for attention kernel is not installed."""
    check_choice("attention", backend, ATTENTION_CHOICES)
    library = ATTENTION_LIBRARIES.get(backend)
    if library and importlib.util.find_spec(library) is None:
        raise ConfigError(
            f"attention = {backend!r} needs the {library} package, which is not installed "
            f"(pip install {library.replace('_', '-')}, or use attention = \"auto\")"
        )


def candidates(offload: str, storage: str, *, quantized: bool) -> list[Placement]:
    """The placements a setting allows, in the order `auto` prefers them (quality first, then speed).

    Native weights beat fp8 storage at every offload level but sequential: group offloading with
    stream prefetch hides most of its transfers behind a 720p step, while fp8 costs precision.
    GGUF experts are already quantized: fp8 storage does not apply to them.
    """
    check_choice("offload", offload, OFFLOAD_CHOICES)
    check_choice("weight_storage", storage, STORAGE_CHOICES)
    fast = ("none", "model", "group")
    ranked = [Placement(p) for p in fast] + [Placement(p, True) for p in fast]
    ranked += [Placement("sequential"), Placement("sequential", True)]
    allowed_fp8 = {False} if quantized or storage == "native" else {True} if storage == "fp8" else {False, True}
    return [p for p in ranked if p.fp8 in allowed_fp8 and offload in ("auto", p.policy)]


def experts(pipe: Any) -> list[tuple[str, Any]]:
    """The pipeline's transformers that are present (a one-expert split agent may hold only one)."""
    found = []
    for name in EXPERTS:
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            found.append((name, module))
    return found


def is_quantized(module: torch.nn.Module) -> bool:
    """True for a model loaded with a quantization config (GGUF): its weights are not plain tensors."""
    return bool(getattr(module, "is_quantized", False) or getattr(module, "hf_quantizer", None))


def place(pipe: Any, placement: Placement, device: torch.device, *, compute_dtype: torch.dtype,
          attention: str = "auto") -> None:
    """Apply `placement` to a freshly loaded pipeline (all modules on the CPU, no hooks yet)."""
    for name, module in experts(pipe):
        if placement.fp8:
            if is_quantized(module):
                raise ConfigError(f"{name} is quantized (GGUF): fp8 storage does not apply; use weight_storage native")
            # Weights stored in fp8, each layer cast up to the compute dtype for its forward only.
            module.enable_layerwise_casting(storage_dtype=FP8_STORAGE, compute_dtype=compute_dtype)
        if attention not in ("auto", ""):
            module.set_attention_backend(attention)
    policy = placement.policy
    if policy == "none":
        for _, module in (*experts(pipe), ("vae", pipe.vae)):
            module.to(device)
    elif policy == "model":
        # One whole component on the GPU at a time, in model_cpu_offload_seq order (expert, expert, vae).
        pipe.enable_model_cpu_offload(device=device)
    elif policy == "group":
        for _, module in experts(pipe):
            module.enable_group_offload(
                onload_device=device,
                offload_device=torch.device("cpu"),
                offload_type="block_level",
                num_blocks_per_group=1,
                # Prefetch the next block on a side stream while this one computes (CUDA only).
                use_stream=device.type == "cuda",
            )
        pipe.vae.to(device)
    elif policy == "sequential":
        if device.type != "cuda":
            # accelerate's leaf-level offload parks weights on "meta" between uses: it needs an accelerator.
            raise ConfigError("offload = \"sequential\" needs a CUDA device; on the CPU use none")
        pipe.enable_sequential_cpu_offload(device=device)
    logger.info("placed %s on %s as %s", type(pipe).__name__, device, placement.label)


def after_run(pipe: Any, placement: Placement) -> None:
    """Put model-offloaded components back on the CPU after a run (also a failed or borrowed one)."""
    if placement.policy in ("model", "sequential"):
        pipe.maybe_free_model_hooks()


def remove(pipe: Any, placement: Placement) -> None:
    """Undo the offload hooks before a pipeline is dropped."""
    if placement.policy in ("model", "sequential"):
        pipe.remove_all_hooks()

"""Tiny LoRA files for tests: PEFT adapters on the tiny checkpoint's transformer, saved as people download them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import torch

TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
# Original Wan names of diffusers' modules, as ComfyUI/kijai/lightx2v files write them.
COMFY = {"attn1": "self_attn", "attn2": "cross_attn", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "o",
         "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2"}


def write_tiny_lora(path: Path, transformer: Any, *, rank: int = 4, seed: int = 0,
                    targets: tuple[str, ...] = TARGETS, format: Literal["diffusers", "comfy"] = "diffusers",
                    scale: float = 1.0) -> Path:
    """Save a random LoRA (non-zero lora_B, so it changes the output) for `transformer` at `path`.

    `transformer`: a WanTransformer3DModel (left untouched) or its folder (model/transformer). diffusers
    format keys are `transformer.blocks.N.attn1.to_q.lora_A.weight`; comfy ones
    `diffusion_model.blocks.N.self_attn.q.lora_down.weight` with an `.alpha` per layer.
    """
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    if isinstance(transformer, (str, Path)):
        from diffusers import WanTransformer3DModel

        model = WanTransformer3DModel.from_pretrained(str(transformer))
    else:
        model = copy.deepcopy(transformer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # lora_alpha = rank: scale 1, as diffusers assumes for a file without alphas.
        model.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=list(targets), init_lora_weights=False))
    state = {f"transformer.{k}": (v.float() * scale).contiguous() for k, v in get_peft_model_state_dict(model).items()}
    if format == "comfy":
        state = to_comfy(state)
    elif format != "diffusers":
        raise ValueError(f"format {format!r}: diffusers or comfy")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def to_comfy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same LoRA keyed the ComfyUI way: diffusion_model.blocks.N.self_attn.q.lora_down.weight, with alphas."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        name = key.removeprefix("transformer.")
        for ours, theirs in COMFY.items():
            name = name.replace(f".{ours}.", f".{theirs}.")
        name = name.replace(".lora_A.", ".lora_down.").replace(".lora_B.", ".lora_up.")
        out["diffusion_model." + name] = tensor
        if ".lora_down." in name:
            out["diffusion_model." + name.replace(".lora_down.weight", ".alpha")] = torch.tensor(float(tensor.shape[0]))
    return out

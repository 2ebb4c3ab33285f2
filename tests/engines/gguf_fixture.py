"""Single-file expert weights written the way community Wan2.2 files are: original Wan key names.

Community GGUFs (city96's converter, llama.cpp's quantizer) and fp8 safetensors keep the names of
the original Wan code (`blocks.0.self_attn.q.weight`, `head.head.weight`, ...), which diffusers'
single-file loader converts. The fixtures here invert that conversion, derived from diffusers' own
rename table so they follow it, and check the round trip through diffusers' converter.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
from pathlib import Path

import numpy as np
import torch

# Key renames of the VACE variant: Wan2.2 T2V/I2V have none, and their targets collide with the head's.
_VACE = ("before_proj", "after_proj")
# diffusers maps both `head.modulation` and every block's `modulation` to scale_shift_table, and
# `head.head` to proj_out: at the top level these belong to Wan's Head module.
_TOP_LEVEL = {"scale_shift_table": "head.modulation", "proj_out.": "head.head."}
# city96's converter keeps these in F32 whatever the file's type ("nn.parameter, can't load from BF16").
_HIGH_PRECISION = (".modulation", "head.modulation")


@functools.cache
def _inverse_rules() -> tuple[tuple[str, str], ...]:
    """(diffusers name part, original name part), in the order that undoes diffusers' renames."""
    from diffusers.loaders import single_file_utils

    source = textwrap.dedent(inspect.getsource(single_file_utils.convert_wan_transformer_to_diffusers))
    table: dict[str, str] | None = None
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "TRANSFORMER_KEYS_RENAME_DICT" for t in node.targets
        ):
            table = ast.literal_eval(node.value)
    assert table, "diffusers' convert_wan_transformer_to_diffusers has no TRANSFORMER_KEYS_RENAME_DICT any more"
    # diffusers applies the renames in order to each key; undoing them runs the inverses in reverse order.
    return tuple(
        (dst, src) for src, dst in reversed(table.items()) if src not in _VACE and not src.startswith("head.")
    )


def original_wan_name(key: str) -> str:
    """The original Wan name of a diffusers WanTransformer3DModel state-dict key."""
    for diffusers_prefix, original_prefix in _TOP_LEVEL.items():
        if key.startswith(diffusers_prefix):
            return original_prefix + key[len(diffusers_prefix) :]
    for diffusers_part, original_part in _inverse_rules():
        key = key.replace(diffusers_part, original_part)
    return key


def original_wan_state_dict(model_folder: Path, component: str) -> dict[str, torch.Tensor]:
    """A component's weights (all its safetensors shards) under the original Wan key names."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for shard in sorted((Path(model_folder) / component).glob("*.safetensors")):
        state.update(load_file(shard))
    assert state, f"{model_folder}/{component} has no safetensors weights"
    original = {original_wan_name(k): v for k, v in state.items()}
    # diffusers must read every name back to the key it came from, or the fixture is not a real file.
    back = convert_wan_transformer_to_diffusers(dict.fromkeys(original, 0))
    assert set(back) == set(state), f"names do not round-trip through diffusers: {sorted(set(back) ^ set(state))}"
    return original


def write_gguf_expert(model_folder: Path, component: str, out_file: Path, qtype: str = "Q8_0") -> Path:
    """Write a component's weights as a community-style Wan GGUF (`qtype`: Q8_0, Q4_0, Q5_0, ...).

    As in real files: 2-D weights whose rows are whole quantization blocks are quantized; biases,
    norms, the modulation tables and other 1-D tensors stay F32; anything else (the 5-D patch
    embedding, rows of an odd length) is F16. The metadata holds general.architecture "wan" and the
    general.file_type of `qtype`. (Real converters also keep tensors under 1024 elements in F32; the
    tiny test models' 32x32 matrices are that small, so that rule is left out to quantize something.)
    """
    import gguf

    quant = gguf.GGMLQuantizationType[qtype]
    block, _ = gguf.GGML_QUANT_SIZES[quant]
    writer = gguf.GGUFWriter(path=None, arch="wan")
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_file_type(gguf.LlamaFileType[f"MOSTLY_{qtype}"])
    for name, tensor in original_wan_state_dict(model_folder, component).items():
        array = tensor.to(torch.float32).numpy()
        if array.ndim == 2 and array.shape[1] % block == 0 and not name.endswith(_HIGH_PRECISION):
            writer.add_tensor(name, gguf.quants.quantize(array, quant), raw_dtype=quant)
        elif array.ndim == 1 or name.endswith(_HIGH_PRECISION):
            writer.add_tensor(name, array, raw_dtype=gguf.GGMLQuantizationType.F32)
        else:
            writer.add_tensor(name, array.astype(np.float16), raw_dtype=gguf.GGMLQuantizationType.F16)
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    writer.write_header_to_file(path=out_file)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_file


def write_fp8_expert(model_folder: Path, component: str, out_file: Path, *, scaled: bool = False) -> Path:
    """Write a component as an fp8 (e4m3fn) single-file safetensors, original Wan names, like Kijai's files.

    2-D weights are fp8, everything else keeps its dtype. `scaled` writes ComfyUI's "scaled fp8"
    instead: each weight divided by a per-tensor scale stored beside it as `<name>.scale_weight`,
    plus the `scaled_fp8` marker tensor.
    """
    from safetensors.torch import save_file

    out: dict[str, torch.Tensor] = {}
    for name, tensor in original_wan_state_dict(model_folder, component).items():
        if tensor.ndim != 2 or not name.endswith(".weight"):
            out[name] = tensor.contiguous()
            continue
        if scaled:
            scale = tensor.abs().max().clamp(min=1e-12) / torch.finfo(torch.float8_e4m3fn).max
            out[name.removesuffix(".weight") + ".scale_weight"] = scale.reshape(1).to(torch.float32)
            tensor = tensor / scale
        out[name] = tensor.to(torch.float8_e4m3fn).contiguous()
    if scaled:
        out["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(out_file))
    return out_file

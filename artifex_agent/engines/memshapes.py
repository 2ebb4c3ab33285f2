"""What a model and a job look like to the memory planner: shapes read from configs, reference shapes.

A model is its transformer experts, VAE and text encoder, each reduced to the config values the
planner's formulas need (`engines.memplan`); a job is its size, frames, batch and dtypes; a card is
its total and free memory. `shapes_from_folder` reads a diffusers Wan folder's configs and
safetensors headers without loading any weights; the WAN22_* shapes are the published configs,
for checks and calibration without the checkpoints.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from artifex_agent.engines.models import read_config

# GGUF bytes per parameter, block formats' average (Q8_0: 34 bytes per 32 weights; Q6_K: 210 per 256;
# the K_M mixes keep some tensors at higher precision).
GGUF_BYTES_PER_PARAM: dict[str, float] = {"Q8_0": 1.0625, "Q6_K": 0.8203, "Q5_K_M": 0.71, "Q4_K_M": 0.60}


# ---- Shapes ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransformerShape:
    """One WanTransformer3DModel expert, from its config."""

    dim: int
    ffn_dim: int
    heads: int
    layers: int
    patch: tuple[int, int, int] = (1, 2, 2)
    in_channels: int = 16
    out_channels: int = 16
    text_dim: int = 4096
    freq_dim: int = 256
    # TI2V (expand_timesteps): a timestep per token, so the modulation tensors are per token too.
    per_token_timestep: bool = False

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def block_linear_params(self) -> int:
        """Parameters of one block's Linear layers (what fp8 layerwise storage casts)."""
        d, f = self.dim, self.ffn_dim
        return 2 * 4 * (d * d + d) + (d * f + f) + (f * d + d)

    @property
    def block_params(self) -> int:
        # + q/k RMSNorms of both attentions, norm2's affine weight and bias, the block's scale_shift_table.
        return self.block_linear_params + 12 * self.dim

    @property
    def nonblock_params(self) -> int:
        """Patch embedding, time and text embedders, time projection, output head."""
        d, p = self.dim, math.prod(self.patch)
        patch_embedding = self.in_channels * d * p + d
        time_embedder = self.freq_dim * d + d + d * d + d
        time_proj = 6 * d * d + 6 * d
        text_embedder = self.text_dim * d + d + d * d + d
        proj_out = d * self.out_channels * p + self.out_channels * p
        return patch_embedding + time_embedder + time_proj + text_embedder + proj_out + 2 * d

    @property
    def params(self) -> int:
        return self.layers * self.block_params + self.nonblock_params

    @property
    def fp32_params(self) -> int:
        """Parameters diffusers keeps in float32 whatever the dtype (_keep_in_fp32_modules)."""
        d = self.dim
        return self.layers * (6 * d + 2 * d) + (self.freq_dim * d + d + d * d + d) + 2 * d

    @property
    def largest_layer_params(self) -> int:
        """The largest Linear inside a block (the FFN's): what one leaf or one dequantized layer holds."""
        return self.dim * self.ffn_dim + max(self.dim, self.ffn_dim)


@dataclass(frozen=True)
class VaeShape:
    """An AutoencoderKLWan, from its config."""

    base_dim: int = 96
    z_dim: int = 16
    spatial: int = 8
    temporal: int = 4
    decoder_dim: int = 0  # decoder_base_dim; 0: the same as base_dim
    residual: bool = False  # Wan2.2 VAE (is_residual, patchified by 2)
    params: int = 0  # 0: scaled from the Wan2.1 VAE by base_dim
    tile_min: int = 256  # diffusers' default tile and stride, in output pixels
    tile_stride: int = 192

    @property
    def dec_dim(self) -> int:
        return self.decoder_dim or self.base_dim

    @property
    def param_count(self) -> int:
        return self.params or round(WAN21_VAE_PARAMS * (self.base_dim / 96) ** 2)

    @property
    def largest_layer_params(self) -> int:
        # The widest 3x3x3 conv of the decoder (4 x decoder dim in and out): one leaf under sequential offload.
        return (4 * self.dec_dim) ** 2 * 27


@dataclass(frozen=True)
class TextEncoderShape:
    """The UMT5 text encoder, from its config."""

    params: int
    dim: int = 4096
    ffn_dim: int = 10240
    heads: int = 64


@dataclass(frozen=True)
class ModelShape:
    """What the planner needs of one diffusers model folder."""

    experts: tuple[TransformerShape, ...]
    vae: VaeShape
    text_encoder: TextEncoderShape | None = None
    boundary_ratio: float | None = None
    kind: str = "t2v"  # t2v, i2v, ti2v

    @property
    def size_multiple(self) -> int:
        """Width and height must be multiples of this (VAE scale x patch)."""
        return self.vae.spatial * max(self.experts[0].patch[1], self.experts[0].patch[2])


@dataclass(frozen=True)
class ExpertWeights:
    """How one expert's weights sit on the GPU: resident bytes, and the largest layer in compute dtype.

    `quantized` (GGUF, and fp8 layerwise storage) adds a transient copy of the largest layer, cast up
    for its forward. Block and non-block weights are taken in proportion to their parameters.
    """

    params: int
    resident_bytes: int
    largest_layer_bytes: int
    quantized: bool = False
    label: str = "native"

    @classmethod
    def native(cls, shape: TransformerShape, dtype_bytes: int = 2) -> ExpertWeights:
        """Weights in the compute dtype, the fp32-kept modules in float32 (as from_pretrained loads them)."""
        extra = shape.fp32_params * (4 - dtype_bytes) if dtype_bytes < 4 else 0
        return cls(shape.params, shape.params * dtype_bytes + extra, shape.largest_layer_params * dtype_bytes,
                   label="bf16" if dtype_bytes == 2 else f"{dtype_bytes * 8}-bit")

    @classmethod
    def fp8(cls, shape: TransformerShape, compute_bytes: int = 2) -> ExpertWeights:
        """diffusers layerwise casting: the blocks' Linear layers in fp8 (1 byte), the rest as loaded."""
        linear = shape.layers * shape.block_linear_params
        rest = shape.params - linear
        resident = linear + rest * compute_bytes + shape.fp32_params * (4 - compute_bytes)
        return cls(shape.params, resident, shape.largest_layer_params * compute_bytes, quantized=True, label="fp8")

    @classmethod
    def gguf(cls, shape: TransformerShape, level: str, compute_bytes: int = 2) -> ExpertWeights:
        """A GGUF file at `level` (Q8_0, Q6_K, Q5_K_M, Q4_K_M), its size estimated from the parameters."""
        per_param = GGUF_BYTES_PER_PARAM[level]
        return cls(shape.params, math.ceil(shape.params * per_param), _dequantized(shape, compute_bytes),
                   quantized=True, label=level)

    @classmethod
    def gguf_file(cls, shape: TransformerShape, path: Path, compute_bytes: int = 2) -> ExpertWeights:
        """A GGUF file on disk: its quantized tensors are what sits on the GPU."""
        return cls(shape.params, Path(path).stat().st_size, _dequantized(shape, compute_bytes),
                   quantized=True, label=Path(path).name)

    def split(self, shape: TransformerShape) -> tuple[int, int]:
        """(non-block bytes, bytes of one block), in proportion to parameters."""
        per_param = self.resident_bytes / max(self.params, 1)
        return math.ceil(shape.nonblock_params * per_param), math.ceil(shape.block_params * per_param)


def _dequantized(shape: TransformerShape, compute_bytes: int) -> int:
    """diffusers' GGUFLinear (without the CUDA kernels) dequantizes to float32, then casts to the compute dtype."""
    return shape.largest_layer_params * (4 + compute_bytes)


@dataclass(frozen=True)
class JobShape:
    """One generation job as the planner sees it."""

    width: int
    height: int
    frames: int
    batch: int = 1
    # guidance > 1: two transformer calls per step. diffusers runs cond and uncond one after the
    # other, so activations are not doubled; the first noise prediction is kept meanwhile.
    cfg: bool = False
    compute_bytes: int = 2  # transformer compute dtype (bf16)
    vae_bytes: int = 4  # the engine keeps the Wan VAE in float32
    encode_frames: int = 0  # frames the VAE encodes first: num_frames for A14B i2v, 1 for TI2V i2v, 0 for t2v


@dataclass(frozen=True)
class Gpu:
    """A card as the caller sees it now; `free_bytes` is free memory plus what this process already holds."""

    total_bytes: int
    free_bytes: int
    fraction: float = 0.0  # gpu_memory_fraction; 0: no cap

    @property
    def budget_bytes(self) -> int:
        cap = int(self.total_bytes * self.fraction) if self.fraction else self.total_bytes
        return min(cap, self.free_bytes)


# ---- Reference shapes: the published Wan2.2 configs (diffusers layout) ------------------------------------

WAN21_VAE_PARAMS = 126_892_531  # AutoencoderKLWan() (base_dim 96, z_dim 16)
WAN22_VAE_PARAMS = 704_688_668  # base_dim 160, decoder_base_dim 256, z_dim 48, residual, patch 2
UMT5_XXL_PARAMS = 5_680_910_336  # UMT5EncoderModel, d_model 4096, 24 layers, vocab 256384

_A14B = TransformerShape(dim=5120, ffn_dim=13824, heads=40, layers=40)
_UMT5 = TextEncoderShape(params=UMT5_XXL_PARAMS)
WAN21_VAE = VaeShape(params=WAN21_VAE_PARAMS)
WAN22_VAE = VaeShape(base_dim=160, z_dim=48, spatial=16, decoder_dim=256, residual=True, params=WAN22_VAE_PARAMS)
WAN22_T2V_A14B = ModelShape((_A14B, _A14B), WAN21_VAE, _UMT5, boundary_ratio=0.875, kind="t2v")
WAN22_I2V_A14B = ModelShape((replace(_A14B, in_channels=36),) * 2, WAN21_VAE, _UMT5, boundary_ratio=0.9, kind="i2v")
WAN22_TI2V_5B = ModelShape(
    (TransformerShape(dim=3072, ffn_dim=14336, heads=24, layers=30, in_channels=48, out_channels=48,
                      per_token_timestep=True),),
    WAN22_VAE, _UMT5, kind="ti2v",
)



# ---- Shapes from a model folder --------------------------------------------------------------------------


def shapes_from_folder(folder: Path) -> ModelShape:
    """The planner's view of a diffusers Wan folder, from its configs and safetensors headers (no weights read)."""
    folder = Path(folder)
    index = read_config(folder / "model_index.json")
    if not index:
        raise ValueError(f"{folder} has no readable model_index.json (not a diffusers model folder)")
    per_token = bool(index.get("expand_timesteps"))
    experts = []
    for name in ("transformer", "transformer_2"):
        config = read_config(folder / name / "config.json")
        if config:
            experts.append(_transformer_shape(config, per_token))
    if not experts:
        raise ValueError(f"{folder} has no transformer/config.json")
    vae_config = read_config(folder / "vae" / "config.json")
    vae = VaeShape(
        base_dim=int(vae_config.get("base_dim") or 96),
        z_dim=int(vae_config.get("z_dim") or 16),
        spatial=int(vae_config.get("scale_factor_spatial") or 8),
        temporal=int(vae_config.get("scale_factor_temporal") or 4),
        decoder_dim=int(vae_config.get("decoder_base_dim") or 0),
        residual=bool(vae_config.get("is_residual")),
        params=safetensors_params(folder / "vae"),
    )
    te_config = read_config(folder / "text_encoder" / "config.json")
    te = None
    if te_config:
        te = TextEncoderShape(
            params=safetensors_params(folder / "text_encoder"),
            dim=int(te_config.get("d_model") or 4096),
            ffn_dim=int(te_config.get("d_ff") or 10240),
            heads=int(te_config.get("num_heads") or 64),
        )
    ratio = index.get("boundary_ratio")
    kind = "ti2v" if per_token else "i2v" if index.get("_class_name") == "WanImageToVideoPipeline" else "t2v"
    return ModelShape(tuple(experts), vae, te, float(ratio) if ratio is not None else None, kind)


def _transformer_shape(config: dict[str, Any], per_token: bool) -> TransformerShape:
    heads = int(config.get("num_attention_heads") or 40)
    patch = config.get("patch_size") or [1, 2, 2]
    in_channels = int(config.get("in_channels") or 16)
    return TransformerShape(
        dim=heads * int(config.get("attention_head_dim") or 128),
        ffn_dim=int(config.get("ffn_dim") or 13824),
        heads=heads,
        layers=int(config.get("num_layers") or 40),
        patch=(int(patch[0]), int(patch[1]), int(patch[2])),
        in_channels=in_channels,
        out_channels=int(config.get("out_channels") or in_channels),
        text_dim=int(config.get("text_dim") or 4096),
        freq_dim=int(config.get("freq_dim") or 256),
        per_token_timestep=per_token,
    )


def safetensors_params(component: Path) -> int:
    """Parameters in a component folder's *.safetensors files, read from their JSON headers; 0 if none."""
    total = 0
    for file in sorted(Path(component).glob("*.safetensors")):
        try:
            with file.open("rb") as fh:
                (size,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(size))
        except (OSError, ValueError, struct.error):
            continue
        for name, info in header.items():
            if name != "__metadata__" and isinstance(info, dict):
                total += math.prod(int(n) for n in info.get("shape", []))
    return total

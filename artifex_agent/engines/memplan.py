"""A GPU memory plan made before a generation job loads anything: peak per placement policy, and a choice.

For each policy ("none", "model", "group", "sequential", fastest first) the job runs in phases (VAE
encode for image-to-video, denoise, VAE decode); a phase's peak is the weights resident then, plus
what the phase allocates, plus a fixed CUDA overhead. The plan picks the fastest policy whose peak
fits the budget with a margin, tiling the VAE only where the untiled decode would not fit, or
refuses with what would fit instead (fewer frames, a smaller size, a GGUF expert), each checked by
running the estimate again.

Everything here is arithmetic on config values: no torch, no weights, no allocation.

Where the formulas come from:

* Transformer activations: the tensors alive at once inside diffusers' `WanTransformerBlock.forward`
  (transformer_wan.py), counted phase by phase in `block_phases`; the fp32 norms and residual adds
  make float32 copies of the hidden states when computing in bf16. The count matches torch's live
  tensor bytes on the CPU to within 2% (tests/engines/test_memplan.py), and 75,600 tokens at A14B
  widths give 8.0 GiB, as the H200 measured.
* VAE decode: `AutoencoderKLWan._decode` runs the decoder one latent frame at a time with a
  feat_cache of 2 frames per causal conv, so its peak is set by one chunk (4 output frames) at
  full resolution, not by the clip length, plus the output growing frame by frame. The chunk's
  live bytes are a measured multiple of decoder_dim x chunk frames x pixels x bytes; the H200
  figures (23.4 GiB untiled, 7.0 GiB tiled at 1280x720x81) give the GPU factor over live bytes.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

GiB = 1024**3

# Fastest first. "none": everything resident; "model": one whole component on the GPU at a time;
# "group": block-level group offloading with stream prefetch; "sequential": one leaf layer at a time.
POLICIES: tuple[str, ...] = ("none", "model", "group", "sequential")
VaeTiling = bool | Literal["auto"]

# ---- Calibration: what the team measured on an H200 (bf16 transformer, SDPA, fp32 VAE) ----------------
# Wan2.2 A14B widths at 1280x720, 81 frames: 21 latent frames x 45 x 80 patches.
H200_TOKENS = 75_600
H200_ACTIVATION_BYTES = 8 * GiB  # denoise activations on top of the weights
H200_VAE_UNTILED_BYTES = int(23.4 * GiB)  # Wan2.1 VAE (base_dim 96) decode of 1280x720x81, untiled
H200_VAE_TILED_BYTES = int(7.0 * GiB)  # the same with diffusers' default tiles (256 px, stride 192)
# One A14B block takes 308 ms on the H200 at 720p; its 0.7 GB of bf16 weights cross PCIe 4.0 in ~30 ms,
# which is why block-level group offloading with prefetch is nearly as fast as model offload.
H200_BLOCK_SECONDS = 0.308

# ---- Live-tensor constants, measured on the CPU with tests/engines/memtrack.py --------------------------
# Peak live bytes of one decoder (or encoder) chunk, in units of dim x chunk frames x H x W x dtype bytes
# (H, W: output pixels; dim: decoder_base_dim or base_dim), for the two shipped VAE architectures
# (dim_mult [1, 2, 4, 4], 2 res blocks). At the peak, a causal conv at full resolution holds the
# padded 6-frame window, the concatenated cache + chunk, the block input, the activation and its
# output, beside the 2-frame feat_cache of every causal conv at every level. Keys: (residual, frames).
VAE_DECODE_UNITS = {(False, 4): 12.75, (False, 1): 18.0, (True, 4): 5.33, (True, 1): 5.6}
VAE_ENCODE_UNITS = {(False, 4): 9.5, (False, 1): 10.5, (True, 4): 3.1, (True, 1): 3.7}

# CUDA context (when not yet created), cuBLAS/cuDNN handles and allocator slack no tensor count sees.
CUDA_OVERHEAD_BYTES = GiB // 2
# The margin kept free: 5% of the budget, at least 0.5 GiB. 5% absorbs the spread of the calibration
# (a few percent between runs) and of allocator fragmentation; the floor covers small cards, where
# 5% would be under what one stray cuDNN workspace takes.
MARGIN_FRACTION = 0.05
MIN_MARGIN_BYTES = GiB // 2
# Group offloading holds the block computing, the next one (prefetched on a side stream) and the
# previous one until the stream lets go of it.
GROUP_RESIDENT_BLOCKS = 3
# WanPipeline's max_sequence_length: every prompt is padded to it.
TEXT_TOKENS = 512

# GGUF bytes per parameter, block formats' average (Q8_0: 34 bytes per 32 weights; Q6_K: 210 per 256;
# the K_M mixes keep some tensors at higher precision).
GGUF_BYTES_PER_PARAM: dict[str, float] = {"Q8_0": 1.0625, "Q6_K": 0.8203, "Q5_K_M": 0.71, "Q4_K_M": 0.60}

# Sizes to suggest, landscape (portrait is the same turned); the model's size rule filters them.
STANDARD_SIZES: tuple[tuple[int, int], ...] = (
    (1920, 1088), (1280, 720), (1280, 704), (1024, 576), (960, 544), (832, 480), (640, 352), (480, 272),
)
SQUARE_SIZES: tuple[int, ...] = (1024, 960, 768, 640, 512, 480, 384)


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


# ---- Formulas (live bytes) --------------------------------------------------------------------------------


def latent_size(vae: VaeShape, job: JobShape) -> tuple[int, int, int]:
    """(latent frames, latent height, latent width) of a job."""
    return (job.frames - 1) // vae.temporal + 1, job.height // vae.spatial, job.width // vae.spatial


def token_count(shape: TransformerShape, vae: VaeShape, job: JobShape) -> int:
    """Sequence length the transformer sees, over the whole batch."""
    frames, lh, lw = latent_size(vae, job)
    pt, ph, pw = shape.patch
    return job.batch * (frames // pt) * (lh // ph) * (lw // pw)


# Block phases during which a Linear layer runs: its weights are in flight then (a dequantized or
# up-cast copy, or the leaf sequential offload brought over) and add to what the phase holds.
LINEAR_PHASES = frozenset({"self_attention", "cross_attention", "ffn_up_matmul", "ffn_down"})
# Phases while the cross-attention's text keys and values exist (512 tokens each, dim wide).
TEXT_KV_PHASES = frozenset({"cross_qk_norm", "cross_attention"})


def block_phases(shape: TransformerShape, compute_bytes: int) -> dict[str, float]:
    """Bytes per token x dim alive at each step of WanTransformerBlock.forward (diffusers 0.42).

    g is the compute dtype's size; `up` is a float32 copy's size when computing in a smaller dtype
    (`x.float()` of a float32 tensor is the tensor itself). Counted in every phase: the block's input,
    still held by the caller's loop (c), and the tensors named below.
    """
    g = compute_bytes
    up = 4 if g < 4 else 0
    r = shape.ffn_dim / shape.dim
    # TI2V: (1 + scale) of a per-token modulation is a new float32 tensor.
    mod = 4 if shape.per_token_timestep else 0
    return {
        # scale_shift_table + temb.float(): the per-token (6 x dim) float32 sum, from a float32 copy of temb.
        "modulation": g + 6 * up if shape.per_token_timestep else 0.0,
        # norm1(x.float()) * (1 + scale) + shift: the float32 norm output and product.
        "norm1": g + max(up + 4, 8 + mod),
        # x, norm, q, k (old and rotated), v, and the three float32 half-width temporaries of x1*cos - x2*sin.
        "rope": 6 * g + 6,
        # x, norm, q, k, v, attention output, to_out.
        "self_attention": 7 * g,
        # The cross-attention's q RMSNorm: c, x, norm, attn output, q, and torch's composite rms_norm
        # (float32 input, its square, the product; CUDA's fused kernel needs less). Ties residual3 in bf16.
        "cross_qk_norm": 5 * g + up + 8,
        # (x.float() + attn * gate): attn * gate promotes to float32, then the float32 sum.
        "residual1": 3 * g + up + 8,
        # c, x, the old norm, attn output, and norm2(x.float()).
        "norm2": 4 * g + max(up + 4, 4 + (g if up else 0)),
        # c, x, norm, self-attention output (still named), q, output, to_out (+ the text k/v).
        "cross_attention": 7 * g,
        "residual2": 5 * g,
        "norm3": 4 * g + max(up + 4, 8 + mod),
        # c, x, attn output, norm, and the FFN's up projection (ffn_dim wide) ...
        "ffn_up_matmul": 4 * g + r * g,
        # ... with its GELU output beside it.
        "ffn_gelu": 4 * g + 2 * r * g,
        "ffn_down": 4 * g + r * g + g,
        # (x.float() + ff.float() * gate): three float32 copies at once.
        "residual3": 5 * g + up + max(up + 4, 8),
    }


def transformer_live_bytes(shape: TransformerShape, vae: VaeShape, job: JobShape, inflight_bytes: int = 0) -> int:
    """Peak live bytes of one expert's forward: the worst block phase plus what lives across blocks.

    `inflight_bytes` is a layer's weights that exist only while it runs (see LINEAR_PHASES).
    """
    tokens = token_count(shape, vae, job)
    seq = tokens // job.batch
    g = job.compute_bytes
    across = 0.0
    if shape.per_token_timestep:
        # timestep_proj (6 x dim) and temb in the compute dtype, and the block's float32 modulation sum.
        across = 7 * g + 24
    rope = 2 * seq * shape.head_dim * 4  # cos and sin, kept in float32
    text = job.batch * TEXT_TOKENS * shape.dim * g
    peak = max(
        (coef + across) * tokens * shape.dim
        + (inflight_bytes if name in LINEAR_PHASES else 0)
        + (2 * text if name in TEXT_KV_PHASES else 0)
        for name, coef in block_phases(shape, g).items()
    )
    return math.ceil(peak) + rope + text


def pipeline_live_bytes(shape: TransformerShape, vae: VaeShape, job: JobShape) -> int:
    """What the denoising loop holds beside the transformer: latents, scheduler history, model input."""
    frames, lh, lw = latent_size(vae, job)
    voxels = job.batch * frames * lh * lw
    z, g = vae.z_dim, job.compute_bytes
    # latents + UniPC's two model outputs and last sample (float32), the model input, the i2v
    # condition (float32), the kept conditional prediction under guidance.
    per_voxel = 16 * z + g * shape.in_channels + 4 * max(shape.in_channels - z, 0) + (g * z if job.cfg else 0)
    prompts = job.batch * TEXT_TOKENS * shape.text_dim * g * (2 if job.cfg else 1)
    return voxels * per_voxel + prompts


def _tiles(latent: int, vae: VaeShape, scale: int) -> tuple[list[int], list[int]]:
    """Tile extents and kept (cropped) extents along one axis, in output pixels, as tiled_decode cuts them."""
    tile, stride = vae.tile_min // scale, vae.tile_stride // scale
    sizes = [min(tile, latent - i) * scale for i in range(0, latent, max(stride, 1))]
    return sizes, [min(stride * scale, s) for s in sizes]


def _tiled(vae: VaeShape, job: JobShape) -> bool:
    """diffusers tiles only when the latent is larger than one tile."""
    _, lh, lw = latent_size(vae, job)
    tile = vae.tile_min // vae.spatial
    return lw > tile or lh > tile


def vae_decode_live_bytes(vae: VaeShape, job: JobShape, *, tiled: bool) -> int:
    """Peak live bytes of AutoencoderKLWan.decode plus the pipeline's postprocess, for the whole batch."""
    frames, lh, lw = latent_size(vae, job)
    t = vae.temporal if frames > 1 else 1
    units = VAE_DECODE_UNITS[(vae.residual, 4 if t > 1 else 1)]
    b = job.vae_bytes
    out = job.batch * 3 * job.frames * job.height * job.width * b
    # postprocess_video denormalises one clip at a time: (x * 0.5 + 0.5) and its clamp beside the video.
    post = out + 2 * out // job.batch
    if not (tiled and _tiled(vae, job)):
        chunk = job.batch * units * vae.dec_dim * t * job.height * job.width * b
        # During the last chunk the frames decoded so far are held; after it, cat and clamp make copies.
        return math.ceil(max(chunk + out, 2 * out, post))
    rows, kept_rows = _tiles(lh, vae, vae.spatial)
    cols, kept_cols = _tiles(lw, vae, vae.spatial)
    area = job.height * job.width
    tile_ratio = sum(rows) * sum(cols) / area
    kept_ratio = sum(kept_rows) * sum(kept_cols) / area
    chunk = job.batch * units * vae.dec_dim * t * max(rows) * max(cols) * b + tile_ratio * out
    # All decoded tiles stay in `rows` while the cropped rows, their concatenation and the clamp are made.
    assembly = (tile_ratio + 2 * kept_ratio + 1) * out
    return math.ceil(max(chunk, assembly, post))


def vae_encode_live_bytes(vae: VaeShape, job: JobShape, *, tiled: bool) -> int:
    """Peak live bytes of the image-to-video condition encode (the input video included), 0 for t2v."""
    n = job.encode_frames
    if n <= 0:
        return 0
    t = vae.temporal if n > 1 else 1
    units = VAE_ENCODE_UNITS[(vae.residual, 4 if t > 1 else 1)]
    b = job.vae_bytes
    video = job.batch * 3 * n * job.height * job.width * b
    # The Wan2.2 VAE patchifies its input (a second copy) and tiles in patchified pixels (twice the extent).
    patch = 2 if vae.residual else 1
    inputs = video * (2 if vae.residual else 1)
    height, width = job.height, job.width
    if tiled and (width > vae.tile_min or height > vae.tile_min):
        height, width = min(height, vae.tile_min * patch), min(width, vae.tile_min * patch)
    return math.ceil(inputs + job.batch * units * vae.base_dim * t * height * width * b)


def text_encoder_bytes(te: TextEncoderShape, compute_bytes: int) -> int:
    """Weights plus one prompt's activations (prompts are encoded one at a time)."""
    act = TEXT_TOKENS * (3 * te.ffn_dim + 8 * te.dim) * compute_bytes + 3 * te.heads * TEXT_TOKENS**2 * 4
    return te.params * compute_bytes + act


# ---- Calibration -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """GPU bytes per live tensor byte, for each formula. LIVE (all 1) is what the CPU measures."""

    transformer: float = 1.0
    vae_untiled: float = 1.0
    vae_tiled: float = 1.0


LIVE = Calibration()


def _h200_calibration() -> Calibration:
    """Fit the factors so the H200 figures come out exactly at their shape."""
    job = JobShape(width=1280, height=720, frames=81)
    expert = WAN22_T2V_A14B.experts[0]
    return Calibration(
        transformer=H200_ACTIVATION_BYTES / transformer_live_bytes(expert, WAN21_VAE, job),
        vae_untiled=H200_VAE_UNTILED_BYTES / vae_decode_live_bytes(WAN21_VAE, job, tiled=False),
        vae_tiled=H200_VAE_TILED_BYTES / vae_decode_live_bytes(WAN21_VAE, job, tiled=True),
    )


# transformer ~1.00 (the live count is the GPU's); VAE untiled ~1.33 (cuDNN conv3d workspace and
# allocator blocks over the live tensors); tiled ~1.8 (the four tile sizes fragment the allocator's
# cache; not explained by live tensors, taken as measured).
GPU_CALIBRATION = _h200_calibration()


# ---- Estimates and plans ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """One stretch of the job: what is resident, what it allocates, and the fixed overhead."""

    name: str  # encode, denoise, decode
    weights_bytes: int
    work_bytes: int  # activations, or the VAE's encode/decode peak
    transient_bytes: int = 0  # a layer in flight (dequantized, up-cast or offloaded), where it adds to the peak
    overhead_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.work_bytes + self.transient_bytes + self.overhead_bytes


@dataclass(frozen=True)
class Estimate:
    """Peak GPU memory of one job under one policy, by phase."""

    policy: str
    phases: tuple[Phase, ...]
    weights_bytes: int  # resident while denoising
    activation_bytes: int  # denoise activations and pipeline tensors
    transient_bytes: int
    vae_weights_bytes: int
    vae_untiled_bytes: int  # decode peak (GPU-calibrated)
    vae_tiled_bytes: int
    vae_tiled: bool  # which of the two the job uses
    encode_bytes: int  # image-to-video condition encode, with the tiling above
    overhead_bytes: int
    text_encoder_bytes: int
    text_encoder_on_gpu: bool  # encode prompts on the GPU (it fits alone beside what stays resident)
    margin_bytes: int = 0
    budget_bytes: int = 0

    @property
    def peak_bytes(self) -> int:
        return max(p.total_bytes for p in self.phases)

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=lambda p: p.total_bytes).name

    @property
    def vae_bytes(self) -> int:
        return self.vae_tiled_bytes if self.vae_tiled else self.vae_untiled_bytes

    @property
    def fits(self) -> bool:
        """Within the budget less the margin (False when no budget was given)."""
        return bool(self.budget_bytes) and self.peak_bytes + self.margin_bytes <= self.budget_bytes


def margin_for(budget_bytes: int) -> int:
    return max(math.ceil(budget_bytes * MARGIN_FRACTION), MIN_MARGIN_BYTES)


def holds(need_bytes: int, budget_bytes: int) -> bool:
    """Whether a budget holds `need_bytes` with the plan's margin (True when either is unknown, 0)."""
    return not need_bytes or not budget_bytes or need_bytes + margin_for(budget_bytes) <= budget_bytes


def estimate(
    policy: str,
    model: ModelShape,
    job: JobShape,
    weights: Sequence[ExpertWeights] | None = None,
    *,
    vae_tiling: VaeTiling = "auto",
    budget_bytes: int = 0,
    overhead_bytes: int = CUDA_OVERHEAD_BYTES,
    calibration: Calibration = GPU_CALIBRATION,
) -> Estimate:
    """Peak GPU memory of `job` under `policy`.

    vae_tiling "auto" tiles exactly when the untiled VAE would not fit `budget_bytes` (never without a budget).
    """
    if policy not in POLICIES:
        raise ValueError(f"policy {policy!r} is not one of {', '.join(POLICIES)}")
    experts = model.experts
    if weights is None:
        weights = [ExpertWeights.native(e, job.compute_bytes) for e in experts]
    if len(weights) != len(experts):
        raise ValueError(f"{len(weights)} expert weights for a model with {len(experts)} expert(s)")
    vae = model.vae
    vae_w = vae.param_count * job.vae_bytes
    margin = margin_for(budget_bytes) if budget_bytes else 0

    # A quantized layer is cast up for its forward; under sequential offload the running leaf is brought over too.
    inflight = max((w.largest_layer_bytes for w in weights if w.quantized), default=0)
    if policy == "sequential":
        inflight += max(w.largest_layer_bytes for w in weights)

    def act(extra: int) -> int:
        return max(math.ceil(transformer_live_bytes(e, vae, job, extra) * calibration.transformer)
                   + pipeline_live_bytes(e, vae, job) for e in experts)

    activation = act(0)
    # What the in-flight layer adds to the peak: nothing when a phase without a Linear is the worst.
    transient = act(inflight) - activation
    if policy == "none":
        denoise_w = sum(w.resident_bytes for w in weights) + vae_w
        vae_phase_w = denoise_w
    elif policy == "model":
        denoise_w = max(w.resident_bytes for w in weights)
        vae_phase_w = vae_w
    elif policy == "group":
        split = (w.split(e) for w, e in zip(weights, experts, strict=True))
        denoise_w = max(nb + GROUP_RESIDENT_BLOCKS * blk for nb, blk in split)
        denoise_w += vae_w  # the VAE stays on the GPU under group offloading
        vae_phase_w = vae_w
    else:  # sequential: one leaf layer at a time, counted in flight above
        denoise_w = 0
        vae_phase_w = vae.largest_layer_params * job.vae_bytes

    untiled = math.ceil(vae_decode_live_bytes(vae, job, tiled=False) * calibration.vae_untiled)
    tiled_bytes = math.ceil(vae_decode_live_bytes(vae, job, tiled=True) * calibration.vae_tiled)
    enc_untiled = math.ceil(vae_encode_live_bytes(vae, job, tiled=False) * calibration.vae_untiled)
    enc_tiled = math.ceil(vae_encode_live_bytes(vae, job, tiled=True) * calibration.vae_tiled)
    if vae_tiling == "auto":
        # Tile exactly when the untiled decode (or encode) would not fit beside what is resident then.
        worst = vae_phase_w + max(untiled, enc_untiled) + overhead_bytes
        # ...and only when tiling is the smaller of the two (for a tiny VAE the tiles' bookkeeping can outweigh it).
        tiled = bool(budget_bytes) and worst + margin > budget_bytes and tiled_bytes < untiled
    else:
        tiled = bool(vae_tiling)
    decode = tiled_bytes if tiled else untiled
    encode = enc_tiled if tiled else enc_untiled

    phases = [Phase("denoise", denoise_w, activation, transient, overhead_bytes),
              Phase("decode", vae_phase_w, decode, 0, overhead_bytes)]
    if encode:
        phases.insert(0, Phase("encode", vae_phase_w, encode, 0, overhead_bytes))

    te = model.text_encoder
    te_bytes = text_encoder_bytes(te, job.compute_bytes) if te else 0
    # Prompts are encoded before the job, beside whatever the policy keeps resident between jobs.
    at_rest = {"none": sum(w.resident_bytes for w in weights) + vae_w, "group": vae_w}.get(policy, 0)
    te_gpu = bool(te_bytes and budget_bytes) and at_rest + te_bytes + overhead_bytes + margin <= budget_bytes

    return Estimate(
        policy=policy, phases=tuple(phases), weights_bytes=denoise_w, activation_bytes=activation,
        transient_bytes=transient, vae_weights_bytes=vae_w, vae_untiled_bytes=untiled, vae_tiled_bytes=tiled_bytes,
        vae_tiled=tiled, encode_bytes=encode, overhead_bytes=overhead_bytes, text_encoder_bytes=te_bytes,
        text_encoder_on_gpu=te_gpu, margin_bytes=margin, budget_bytes=budget_bytes,
    )  # fmt: skip


@dataclass(frozen=True)
class Alternative:
    """A change to the job that the estimate says fits."""

    kind: str  # frames, size, gguf, batch
    job: JobShape
    policy: str
    peak_bytes: int
    gguf: str = ""

    def describe(self) -> str:
        if self.kind == "frames":
            return f"{self.job.frames} frames at {self.job.width}x{self.job.height}"
        if self.kind == "size":
            return f"{self.job.width}x{self.job.height} at {self.job.frames} frames"
        if self.kind == "batch":
            return f"{self.job.batch} clip(s) per job"
        return f"{self.gguf} GGUF expert weights (about {self.peak_bytes / GiB:.1f} GiB peak)"


@dataclass(frozen=True)
class Plan:
    """Every policy's estimate for one job, the chosen (fastest fitting) policy, or what would fit instead."""

    model: ModelShape
    job: JobShape
    budget_bytes: int
    margin_bytes: int
    estimates: tuple[Estimate, ...]
    chosen: str | None
    weights_label: str = "native"
    alternatives: tuple[Alternative, ...] = field(default=())
    held_elsewhere_bytes: int = 0  # what other processes hold of this process's cap, when a Gpu was given

    @property
    def ok(self) -> bool:
        return self.chosen is not None

    def estimate_for(self, policy: str) -> Estimate:
        return next(e for e in self.estimates if e.policy == policy)

    @property
    def chosen_estimate(self) -> Estimate | None:
        return self.estimate_for(self.chosen) if self.chosen else None

    def refusal(self) -> str:
        """Why the job cannot run here and what would, or '' when a policy fits."""
        if self.ok:
            return ""
        job = self.job
        best = min(self.estimates, key=lambda e: e.peak_bytes)
        usable = self.budget_bytes - self.margin_bytes
        clips = f"{job.batch} clips" if job.batch > 1 else "1 clip"
        placement = "no offload" if best.policy == "none" else f"{best.policy} offload"
        head = (
            f"{job.width}x{job.height}, {job.frames} frames ({clips}) needs {best.peak_bytes / GiB:.1f} GiB "
            f"of GPU memory even with {placement}{' and tiled VAE' if best.vae_tiled else ''} "
            f"(in its {best.peak_phase} phase), but {self.budget_bytes / GiB:.1f} GiB is available "
            f"({usable / GiB:.1f} GiB after a {self.margin_bytes / GiB:.1f} GiB margin)"
        )
        options = [a.describe() for a in self.alternatives]
        if self.held_elsewhere_bytes >= GiB // 2:
            options.append(f"free the {self.held_elsewhere_bytes / GiB:.1f} GiB other processes hold on this GPU")
        if not options:
            return head + "; no shorter clip, smaller size or GGUF expert would fit either: use a larger GPU"
        return f"{head}. What would fit: {'; or '.join(options)}"


def plan(
    model: ModelShape,
    job: JobShape,
    weights: Sequence[ExpertWeights] | None = None,
    *,
    budget_bytes: int | None = None,
    gpu: Gpu | None = None,
    vae_tiling: VaeTiling = "auto",
    overhead_bytes: int = CUDA_OVERHEAD_BYTES,
    calibration: Calibration = GPU_CALIBRATION,
    policies: Sequence[str] = POLICIES,
    suggest: bool = True,
) -> Plan:
    """Estimate every policy and choose the fastest that fits; when none does, find what would (`suggest`)."""
    held = 0
    if budget_bytes is None:
        if gpu is None:
            raise ValueError("plan needs budget_bytes or a Gpu")
        budget_bytes = gpu.budget_bytes
        cap = int(gpu.total_bytes * gpu.fraction) if gpu.fraction else gpu.total_bytes
        held = max(cap - gpu.free_bytes, 0)
    budget = int(budget_bytes)

    def run(j: JobShape, w: Sequence[ExpertWeights] | None) -> list[Estimate]:
        return [estimate(p, model, j, w, vae_tiling=vae_tiling, budget_bytes=budget, overhead_bytes=overhead_bytes,
                         calibration=calibration) for p in POLICIES if p in policies]

    estimates = run(job, weights)
    chosen = next((e.policy for e in estimates if e.fits), None)
    label = weights[0].label if weights else ("bf16" if job.compute_bytes == 2 else f"{job.compute_bytes * 8}-bit")
    alternatives: list[Alternative] = []
    if chosen is None and suggest:
        alternatives = _alternatives(model, job, weights, run)
    return Plan(model, job, budget, margin_for(budget), tuple(estimates), chosen, label, tuple(alternatives), held)


def _alternatives(
    model: ModelShape, job: JobShape, weights: Sequence[ExpertWeights] | None, run: Any
) -> list[Alternative]:
    """The nearest changes that fit, each found by estimating again: frames, then size, then GGUF, then batch."""

    def best(j: JobShape, w: Sequence[ExpertWeights] | None = weights) -> Estimate | None:
        return next((e for e in run(j, w) if e.fits), None)

    found: list[Alternative] = []
    k = model.vae.temporal
    # Frames: the largest k*n+1 below the job's that fits (the peak grows with frames).
    lo, hi = 0, (job.frames - 1) // k - 1
    if hi >= 0 and best(replace(job, frames=1)) is not None:
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if best(replace(job, frames=mid * k + 1)) is not None:
                lo = mid
            else:
                hi = mid - 1
        j = replace(job, frames=lo * k + 1)
        e = best(j)
        if e is not None:
            found.append(Alternative("frames", j, e.policy, e.peak_bytes))
    # Size: the largest standard size, same orientation, smaller than the job's, at these frames.
    for w, h in _sizes(job, model.size_multiple):
        j = replace(job, width=w, height=h)
        e = best(j)
        if e is not None:
            found.append(Alternative("size", j, e.policy, e.peak_bytes))
            break
    # GGUF: the best quality level lighter than the current weights that fits.
    current = sum(w.resident_bytes for w in weights) if weights else sum(
        ExpertWeights.native(x, job.compute_bytes).resident_bytes for x in model.experts)
    for level in GGUF_BYTES_PER_PARAM:
        gw = [ExpertWeights.gguf(x, level, job.compute_bytes) for x in model.experts]
        if sum(w.resident_bytes for w in gw) >= current:
            continue
        e = best(job, gw)
        if e is not None:
            found.append(Alternative("gguf", job, e.policy, e.peak_bytes, gguf=level))
            break
    if job.batch > 1:
        j = replace(job, batch=1)
        e = best(j)
        if e is not None:
            found.append(Alternative("batch", j, e.policy, e.peak_bytes))
    return found


def _sizes(job: JobShape, multiple: int) -> list[tuple[int, int]]:
    """Standard sizes in the job's orientation, smaller than it, that the model accepts, largest first."""
    if job.width == job.height:
        sizes = [(s, s) for s in SQUARE_SIZES]
    elif job.width > job.height:
        sizes = list(STANDARD_SIZES)
    else:
        sizes = [(h, w) for w, h in STANDARD_SIZES]
    area = job.width * job.height
    ok = [(w, h) for w, h in sizes if w * h < area and w % multiple == 0 and h % multiple == 0]
    return sorted(ok, key=lambda s: -s[0] * s[1])


PLAN_TABLE_COLUMNS = ("policy", "weights GiB", "activations GiB", "VAE GiB", "peak GiB", "fits", "chosen")


def format_plan_table(plan: Plan) -> list[tuple[str, ...]]:
    """One row per policy, in PLAN_TABLE_COLUMNS order, for a CLI table."""
    rows: list[tuple[str, ...]] = []
    for e in plan.estimates:
        vae = f"{e.vae_bytes / GiB:.1f}{' tiled' if e.vae_tiled else ''}"
        rows.append((
            e.policy, f"{e.weights_bytes / GiB:.1f}", f"{(e.activation_bytes + e.transient_bytes) / GiB:.1f}", vae,
            f"{e.peak_bytes / GiB:.1f}", "yes" if e.fits else "no", "*" if e.policy == plan.chosen else "",
        ))  # fmt: skip
    return rows


# ---- Shapes from a model folder --------------------------------------------------------------------------


def shapes_from_folder(folder: Path) -> ModelShape:
    """The planner's view of a diffusers Wan folder, from its configs and safetensors headers (no weights read)."""
    folder = Path(folder)
    index = _json(folder / "model_index.json")
    if not index:
        raise ValueError(f"{folder} has no readable model_index.json (not a diffusers model folder)")
    per_token = bool(index.get("expand_timesteps"))
    experts = []
    for name in ("transformer", "transformer_2"):
        config = _json(folder / name / "config.json")
        if config:
            experts.append(_transformer_shape(config, per_token))
    if not experts:
        raise ValueError(f"{folder} has no transformer/config.json")
    vae_config = _json(folder / "vae" / "config.json")
    vae = VaeShape(
        base_dim=int(vae_config.get("base_dim") or 96),
        z_dim=int(vae_config.get("z_dim") or 16),
        spatial=int(vae_config.get("scale_factor_spatial") or 8),
        temporal=int(vae_config.get("scale_factor_temporal") or 4),
        decoder_dim=int(vae_config.get("decoder_base_dim") or 0),
        residual=bool(vae_config.get("is_residual")),
        params=safetensors_params(folder / "vae"),
    )
    te_config = _json(folder / "text_encoder" / "config.json")
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


def _json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}

"""A GPU memory plan made before a generation job loads anything: peak per placement policy, and a choice.

For each policy ("none", "model", "group", "sequential", fastest first) the job runs in phases (VAE
encode for image-to-video, denoise, VAE decode); a phase's peak is the weights resident then, plus
what the phase allocates, plus a fixed CUDA overhead. The plan picks the fastest policy whose peak
fits the budget with a margin, tiling the VAE only where the untiled decode would not fit, or
refuses with what would fit instead (fewer frames, a smaller size, a GGUF expert), each checked by
running the estimate again.

Everything here is arithmetic on config values: no torch, no weights, no allocation. The shapes it
works on (model, job, card, expert weights) are `engines.memshapes`.

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

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from artifex_agent.engines.memshapes import (
    GGUF_BYTES_PER_PARAM,
    WAN21_VAE,
    WAN22_T2V_A14B,
    ExpertWeights,
    Gpu,
    JobShape,
    ModelShape,
    TextEncoderShape,
    TransformerShape,
    VaeShape,
)

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

# Sizes to suggest, landscape (portrait is the same turned); the model's size rule filters them.
STANDARD_SIZES: tuple[tuple[int, int], ...] = (
    (1920, 1088), (1280, 720), (1280, 704), (1024, 576), (960, 544), (832, 480), (640, 352), (480, 272),
)
SQUARE_SIZES: tuple[int, ...] = (1024, 960, 768, 640, 512, 480, 384)


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

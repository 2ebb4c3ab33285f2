"""Wan2.2 video generation with diffusers: validate a request, keep pipelines resident, run one job at a time."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import PIL.Image
import torch

from artifex_agent.engines.gpu import (
    apply_memory_fraction,
    configure_allocator,
    is_oom,
    release_memory,
    resolve_device,
    resolve_dtype,
)
from artifex_agent.engines.models import ModelEntry, list_models, resolve_model, size_rules
from artifex_agent.errors import ArtifexError, ExitCode, RequestError, ResourceError

logger = logging.getLogger(__name__)

MAX_STEPS = 200
# Wan2.2 A14B models are trained at 16 fps, TI2V-5B at 24 fps.
FPS = {"t2v": 16.0, "i2v": 16.0, "ti2v": 24.0}
StepCallback = Callable[[int, int], None]


class GenerationCancelled(ArtifexError):
    """The job's cancel event was set; the pipeline stopped between denoising steps."""

    exit_code = ExitCode.INTERRUPTED


@dataclass
class GenerationRequest:
    """One pipeline call: a batch of prompts sharing model, size, frames and steps."""

    model: str
    prompts: list[str]
    task: Literal["t2v", "i2v"] = "t2v"
    negative_prompt: str = ""
    width: int = 64
    height: int = 64
    num_frames: int = 9
    steps: int = 4
    guidance_scale: float = 1.0
    guidance_scale_2: float | None = None
    seed: int = 0
    image: PIL.Image.Image | None = None
    output: Literal["rgb", "latent"] = "rgb"
    # Per-clip seeds; by default clip i uses seed + i, so a clip does not depend on its batch mates.
    seeds: list[int] | None = None

    def clip_seeds(self) -> list[int]:
        """The seed of each clip, in prompt order."""
        return list(self.seeds) if self.seeds is not None else [self.seed + i for i in range(len(self.prompts))]


@dataclass
class GenerationResult:
    """What one pipeline call produced."""

    frames: np.ndarray | None  # uint8 (clips, frames, H, W, 3) for output="rgb"
    latents: torch.Tensor | None  # float32 (clips, C, T, h, w) on the CPU for output="latent"
    fps: float
    model: str
    seconds: float


class GenerationEngine:
    """Resident diffusers pipelines for the models under one root; one job at a time."""

    def __init__(
        self,
        models_root: Path,
        *,
        device: str = "auto",
        dtype: str = "auto",
        cpu_offload: bool = False,
        vae_tiling: bool = False,
        memory_fraction: float = 0.0,
        max_width: int = 1920,
        max_height: int = 1920,
        max_frames: int = 241,
        max_batch: int = 8,
    ) -> None:
        configure_allocator()
        self.models_root = Path(models_root)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        apply_memory_fraction(memory_fraction, self.device)
        # Model offload moves whole models between CPU and GPU; on a CPU there is nothing to offload.
        self.cpu_offload = cpu_offload and self.device.type == "cuda"
        self.vae_tiling = vae_tiling
        self.max_width, self.max_height, self.max_frames, self.max_batch = max_width, max_height, max_frames, max_batch
        self._pipes: dict[str, Any] = {}
        self._i2v_views: dict[str, Any] = {}
        # Lock order: _run_lock, then _load_lock.
        self._load_lock = threading.RLock()
        self._run_lock = threading.Lock()

    def models(self) -> list[ModelEntry]:
        """Every model under the models root."""
        return list_models(self.models_root)

    def loaded(self) -> list[str]:
        """Names of the models resident now."""
        with self._load_lock:
            return sorted(self._pipes)

    def validate(self, req: GenerationRequest) -> None:
        """Refuse a request that cannot run, before any heavy work, with a message the user can act on."""
        self._validate(req)

    def load(self, name: str) -> Any:
        """The resident pipeline for `name`, loading it from the local folder the first time."""
        with self._load_lock:
            pipe = self._pipes.get(name)
            if pipe is None:
                entry = resolve_model(self.models_root, name)
                if entry.kind == "upscale":
                    raise RequestError(f"model {name!r} is an upscaler, not a video generation model")
                pipe = self._pipes[name] = self._load(entry)
            return pipe

    def unload(self, name: str) -> bool:
        """Drop a resident model and give its memory back; False when it was not loaded."""
        with self._run_lock, self._load_lock:
            pipe = self._pipes.pop(name, None)
            self._i2v_views.pop(name, None)
            if pipe is None:
                return False
            if self.cpu_offload:
                pipe.remove_all_hooks()
            del pipe
            release_memory()
            logger.info("unloaded model %s", name)
            return True

    def close(self) -> None:
        """Unload every model (agent shutdown)."""
        for name in self.loaded():
            self.unload(name)

    def generate(
        self,
        req: GenerationRequest,
        *,
        on_step: StepCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        """Run one request to the end, reporting steps, stopping early when `cancel` is set."""
        entry = self._validate(req)
        with self._run_lock:
            if cancel is not None and cancel.is_set():
                raise GenerationCancelled("cancelled before it started")
            pipe = self._pipeline_for(entry, req.task)
            started = time.perf_counter()
            kwargs = self._call_kwargs(req, entry)

            def step_end(pipeline: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
                if on_step is not None:
                    on_step(i + 1, pipeline.num_timesteps)
                if cancel is not None and cancel.is_set():
                    raise GenerationCancelled(f"cancelled after step {i + 1} of {pipeline.num_timesteps}")
                return {}

            oom = ""
            try:
                output = pipe(**kwargs, callback_on_step_end=step_end).frames
            except Exception as exc:
                if not is_oom(exc):
                    self._reset_offload(entry.name)
                    raise
                oom = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if oom:
                # Outside the except block, so the traceback's frames (holding activations) are gone first.
                self._reset_offload(entry.name)
                release_memory()
                logger.warning("out of memory on %s: %s", self.device, oom)
                raise ResourceError(self._oom_advice(req))
            if pipe is not self._pipes.get(entry.name):
                # The TI2V image-to-video view shares the offload hooks of the pipeline it came from.
                self._reset_offload(entry.name)
            frames: np.ndarray | None = None
            latents: torch.Tensor | None = None
            if req.output == "latent":
                latents = output.to("cpu", torch.float32).contiguous()
            else:
                frames = to_uint8(output)
            seconds = time.perf_counter() - started
        logger.info(
            "generated %d clip(s) %dx%d x%d frames, %d steps with %s in %.2fs",
            len(req.prompts), req.width, req.height, req.num_frames, req.steps, req.model, seconds,
        )  # fmt: skip
        return GenerationResult(frames=frames, latents=latents, fps=FPS[entry.kind], model=req.model, seconds=seconds)

    @contextlib.contextmanager
    def exclusive(self, model: str) -> Iterator[Any]:
        """Hold the engine (one job at a time) and yield the resident pipeline to drive step by step (split jobs)."""
        with self._run_lock:
            pipe = self.load(model)
            try:
                yield pipe
            finally:
                self._reset_offload(model)

    def decode(self, model: str, latents: torch.Tensor) -> np.ndarray:
        """Decode latents from output="latent" into uint8 frames (clips, F, H, W, 3), as the pipeline would."""
        with self._run_lock:
            pipe = self.load(model)
            vae = pipe.vae
            z = latents.to(self.device, vae.dtype)
            mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(z.device, z.dtype)
            # Same arithmetic as the Wan pipelines (divide by 1/std), so the frames match bit for bit.
            inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(z.device, z.dtype)
            with torch.inference_mode():
                video = vae.decode(z / inv_std + mean, return_dict=False)[0]
                frames = pipe.video_processor.postprocess_video(video, output_type="np")
            self._reset_offload(model)
            return to_uint8(frames)

    def _validate(self, req: GenerationRequest) -> ModelEntry:
        """Check a request against the model's configs and this agent's limits."""
        if not isinstance(req.prompts, list) or not req.prompts:
            raise RequestError("prompts is empty: give at least one prompt")
        if any(not isinstance(p, str) or not p.strip() for p in req.prompts):
            raise RequestError("every prompt must be non-empty text")
        if len(req.prompts) > self.max_batch:
            raise RequestError(f"{len(req.prompts)} prompts is over this agent's batch limit of {self.max_batch}")
        if req.seeds is not None and len(req.seeds) != len(req.prompts):
            raise RequestError(f"seeds has {len(req.seeds)} values for {len(req.prompts)} prompts")
        if any(not 0 <= s < 2**64 for s in req.clip_seeds()):
            raise RequestError("seed must be within 0..2**64-1")
        if req.output not in ("rgb", "latent"):
            raise RequestError(f"output must be 'rgb' or 'latent', got {req.output!r}")
        if req.task not in ("t2v", "i2v"):
            raise RequestError(f"task must be 't2v' or 'i2v', got {req.task!r}")
        entry = resolve_model(self.models_root, req.model)
        if entry.kind == "upscale":
            raise RequestError(f"model {req.model!r} is an upscaler, not a video generation model")
        if req.task == "i2v":
            if entry.kind == "t2v":
                raise RequestError(f"model {req.model!r} is text-to-video; use an i2v or ti2v model for task i2v")
            if not isinstance(req.image, PIL.Image.Image):
                raise RequestError("task i2v needs an input image")
        else:
            if entry.kind == "i2v":
                raise RequestError(f"model {req.model!r} is image-to-video: set task i2v and give an image")
            if req.image is not None:
                raise RequestError("an image was given but task is t2v: set task i2v to use it")
        rules = size_rules(entry)
        for label, value, limit in (("width", req.width, self.max_width), ("height", req.height, self.max_height)):
            if not isinstance(value, int) or value <= 0:
                raise RequestError(f"{label} must be a positive whole number of pixels, got {value!r}")
            if value % rules.spatial:
                lower = max(value // rules.spatial * rules.spatial, rules.spatial)
                raise RequestError(
                    f"{label} must be a multiple of {rules.spatial} for {req.model}; "
                    f"got {value} (try {lower} or {lower + rules.spatial})"
                )
            if value > limit:
                raise RequestError(f"{label} {value} is over this agent's limit of {limit}")
        n, k = req.num_frames, rules.temporal
        if not isinstance(n, int) or n < 1 or (n - 1) % k:
            near = max(round((n - 1) / k), 0) * k + 1 if isinstance(n, int) else 81
            raise RequestError(f"num_frames must be {k}k+1, e.g. {near}; got {n}")
        if n > self.max_frames:
            raise RequestError(f"num_frames {n} is over this agent's limit of {self.max_frames}")
        latent_frames = (n - 1) // k + 1
        if max(latent_frames, req.width // rules.spatial, req.height // rules.spatial) > rules.max_positions:
            raise RequestError(f"{n} frames at {req.width}x{req.height} is more than {req.model}'s position "
                               f"embedding covers ({rules.max_positions} positions per axis)")
        if not isinstance(req.steps, int) or not 1 <= req.steps <= MAX_STEPS:
            raise RequestError(f"steps must be within 1..{MAX_STEPS}, got {req.steps!r}")
        for label, scale in (("guidance_scale", req.guidance_scale), ("guidance_scale_2", req.guidance_scale_2)):
            if scale is not None and not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale >= 1):
                raise RequestError(f"{label} must be 1 or more (1 turns guidance off), got {scale!r}")
        if req.guidance_scale_2 is not None and not entry.two_experts:
            raise RequestError(f"guidance_scale_2 applies to two-expert models only; {req.model} has one")
        return entry

    def _load(self, entry: ModelEntry) -> Any:
        """Build the pipeline named in model_index.json from the local folder, placed as configured."""
        from diffusers import WanImageToVideoPipeline, WanPipeline

        _allow_missing_ftfy()
        cls = WanImageToVideoPipeline if entry.kind == "i2v" else WanPipeline
        # The Wan VAE loses detail in half precision; diffusers' Wan examples keep it in float32.
        dtype: Any = self.dtype if self.dtype == torch.float32 else {"default": self.dtype, "vae": torch.float32}
        started = time.perf_counter()
        pipe = cls.from_pretrained(str(entry.path), local_files_only=True, dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
        if self.vae_tiling and hasattr(pipe.vae, "enable_tiling"):
            pipe.vae.enable_tiling()
        oom = False
        try:
            if self.cpu_offload:
                pipe.enable_model_cpu_offload(device=self.device)
            else:
                pipe.to(self.device)
        except Exception as exc:
            if not is_oom(exc):
                raise
            oom = True
        if oom:
            del pipe
            release_memory()
            raise ResourceError(f"model {entry.name!r} does not fit in GPU memory: enable cpu_offload")
        logger.info(
            "loaded %s (%s, %s, %s%s) in %.1fs",
            entry.name, cls.__name__, self.device, str(self.dtype).removeprefix("torch."),
            ", cpu offload" if self.cpu_offload else "", time.perf_counter() - started,
        )  # fmt: skip
        return pipe

    def _pipeline_for(self, entry: ModelEntry, task: str) -> Any:
        """The pipeline for a task; TI2V models run i2v through an image-to-video view sharing their modules."""
        pipe = self.load(entry.name)
        if entry.kind != "ti2v" or task != "i2v":
            return pipe
        with self._load_lock:
            view: Any = self._i2v_views.get(entry.name)
            if view is None:
                from diffusers import WanImageToVideoPipeline

                view = WanImageToVideoPipeline(
                    **pipe.components, boundary_ratio=pipe.config.boundary_ratio, expand_timesteps=True
                )
                view.set_progress_bar_config(disable=True)
                self._i2v_views[entry.name] = view
            return view

    def _call_kwargs(self, req: GenerationRequest, entry: ModelEntry) -> dict[str, Any]:
        """Arguments for the pipeline call."""
        kwargs: dict[str, Any] = {
            "prompt": list(req.prompts),
            "negative_prompt": req.negative_prompt,
            "width": req.width,
            "height": req.height,
            "num_frames": req.num_frames,
            "num_inference_steps": req.steps,
            "guidance_scale": float(req.guidance_scale),
            "num_videos_per_prompt": 1,
            # One CPU generator per clip: the same bits on any device and whatever the batch holds.
            "generator": [torch.Generator("cpu").manual_seed(s) for s in req.clip_seeds()],
            "output_type": "latent" if req.output == "latent" else "np",
        }
        if entry.two_experts:
            kwargs["guidance_scale_2"] = float(req.guidance_scale_2 or req.guidance_scale)
        if req.task == "i2v" and req.image is not None:
            kwargs["image"] = req.image.convert("RGB").resize((req.width, req.height), PIL.Image.Resampling.LANCZOS)
        return kwargs

    def _reset_offload(self, name: str) -> None:
        """After a failed or borrowed run, put offloaded models back on the CPU and re-arm the hooks."""
        pipe = self._pipes.get(name)
        if self.cpu_offload and pipe is not None:
            pipe.maybe_free_model_hooks()

    def _oom_advice(self, req: GenerationRequest) -> str:
        """What to change after running out of GPU memory."""
        tips = ["fewer frames", "a smaller size"]
        if len(req.prompts) > 1:
            tips.append("fewer prompts per batch")
        if not self.cpu_offload:
            tips.append("cpu_offload = true")
        if not self.vae_tiling:
            tips.append("vae_tiling = true")
        return (
            f"out of GPU memory generating {len(req.prompts)} clip(s) of {req.num_frames} frames at "
            f"{req.width}x{req.height}; try {', '.join(tips)}"
        )


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] -> uint8, rounded and clipped; a float32 input is overwritten to spare a copy."""
    frames = np.asarray(frames, dtype=np.float32)
    np.multiply(frames, 255.0, out=frames)
    np.rint(frames, out=frames)
    np.clip(frames, 0, 255, out=frames)
    return frames.astype(np.uint8)


def _allow_missing_ftfy() -> None:
    """Let Wan's image-to-video pipeline clean prompts without ftfy installed."""
    # diffusers' pipeline_wan_i2v calls ftfy.fix_text unconditionally, though ftfy is optional for it
    # (pipeline_wan.py checks). Without ftfy, prompts skip mojibake repair and are otherwise cleaned alike.
    from diffusers.pipelines.wan import pipeline_wan_i2v
    from diffusers.utils import is_ftfy_available

    if not is_ftfy_available() and not hasattr(pipeline_wan_i2v, "ftfy"):
        logger.info("ftfy is not installed; i2v prompts are not repaired for mojibake")
        pipeline_wan_i2v.ftfy = types.SimpleNamespace(fix_text=lambda text: text)  # type: ignore[attr-defined,assignment]

"""Wan2.2 video generation with diffusers: validate a request, keep pipelines resident, run one job at a time."""

from __future__ import annotations

import contextlib
import json
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

from artifex_agent.engines import lora, oom, schedulers, weights
from artifex_agent.engines import placement as placing
from artifex_agent.engines.eta import CostHistory
from artifex_agent.engines.gpu import (
    apply_memory_fraction,
    configure_allocator,
    release_memory,
    resolve_device,
    resolve_dtype,
)
from artifex_agent.engines.models import ModelEntry, list_models, resolve_model, size_rules
from artifex_agent.engines.placement import Placement
from artifex_agent.engines.previews import MIN_INTERVAL_S, Preview, Previews, denoised_estimate
from artifex_agent.engines.prompts import PromptEncoder
from artifex_agent.engines.vram import JobPlan, JobPlanner, MissLog
from artifex_agent.errors import ArtifexError, ExitCode, RequestError, ResourceError
from artifex_agent.lora_ref import LoraRef, check_loras
from artifex_agent.vocabulary import check_seeds

logger = logging.getLogger(__name__)

MAX_STEPS = 200
# Wan2.2 A14B models are trained at 16 fps, TI2V-5B at 24 fps.
FPS = {"t2v": 16.0, "i2v": 16.0, "ti2v": 24.0}
StepCallback = Callable[[int, int], None]
PreviewCallback = Callable[[Preview], None]


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
    # LoRAs applied for this call only (artifex_agent/lora_ref.py); none: the base model, bit for bit.
    loras: tuple[LoraRef, ...] = ()
    # "" : the model's own scheduler; "unipc" or "euler" (flow-match Euler). shift / boundary_ratio
    # override the scheduler's flow shift and the two-expert switch point (None: the model's).
    scheduler: str = ""
    shift: float | None = None
    boundary_ratio: float | None = None
    # A live preview (engines/previews.py) every this many steps; 0: none. Changes no output bit.
    preview_every: int = 0

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


@dataclass
class Resident:
    """One loaded model: its pipeline, how it is placed, its text encoder, and which experts it holds."""

    entry: ModelEntry
    pipe: Any
    placement: Placement
    prompts: PromptEncoder
    experts: frozenset[str]
    adapters: lora.Adapters


class GenerationEngine:
    """Resident diffusers pipelines for the models under one root; one job at a time."""

    def __init__(
        self,
        models_root: Path,
        *,
        device: str = "auto",
        dtype: str = "auto",
        offload: str = "auto",
        weight_storage: str = "auto",
        attention: str = "auto",
        vae_tiling: bool | str = "auto",
        cpu_offload: bool = False,
        memory_fraction: float = 0.0,
        vram_budget_gib: float = 0.0,
        misses_file: Path | None = None,
        max_width: int = 1920,
        max_height: int = 1920,
        max_frames: int = 241,
        max_batch: int = 8,
        lora_budget_bytes: int = lora.DEFAULT_BUDGET_BYTES,
    ) -> None:
        configure_allocator()
        self.models_root = Path(models_root)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        apply_memory_fraction(memory_fraction, self.device)
        # cpu_offload = true is the older spelling of offload = "model".
        if cpu_offload and offload == "auto":
            offload = "model"
        placing.check_choice("offload", offload, placing.OFFLOAD_CHOICES)
        placing.check_choice("weight_storage", weight_storage, placing.STORAGE_CHOICES)
        placing.check_attention(attention)
        if vae_tiling not in (True, False, "auto"):
            raise ResourceError(f"vae_tiling must be true, false or \"auto\", not {vae_tiling!r}")
        self.offload, self.weight_storage, self.attention = offload, weight_storage, attention
        self.vae_tiling = vae_tiling
        self.planner = JobPlanner(self.device, self.dtype, fraction=memory_fraction, budget_gib=vram_budget_gib,
                                  vae_tiling=vae_tiling)
        self.misses = MissLog(misses_file)
        self.max_width, self.max_height, self.max_frames, self.max_batch = max_width, max_height, max_frames, max_batch
        self.lora_budget_bytes = lora_budget_bytes
        self._resident: dict[str, Resident] = {}
        # What decoding cost lately, by size: the ETA's tail (engines/eta.py).
        self.costs = CostHistory()
        # The most often one job makes a preview (engines/previews.py); tests set 0 to see every one.
        self.preview_interval_s = MIN_INTERVAL_S
        self._i2v_views: dict[str, Any] = {}
        # Lock order: _run_lock, then _load_lock.
        self._load_lock = threading.RLock()
        self._run_lock = threading.Lock()

    @property
    def cpu_offload(self) -> bool:
        """True when whole components move between CPU and GPU (offload "model")."""
        return self.offload == "model"

    def models(self) -> list[ModelEntry]:
        """Every model under the models root."""
        return list_models(self.models_root)

    def loaded(self) -> list[str]:
        """Names of the models resident now."""
        with self._load_lock:
            return sorted(self._resident)

    def placement_of(self, name: str) -> Placement | None:
        """How a resident model is placed, or None when it is not loaded."""
        with self._load_lock:
            resident = self._resident.get(name)
            return resident.placement if resident else None

    def validate(self, req: GenerationRequest) -> None:
        """Refuse a request that cannot run, before any heavy work, with a message the user can act on."""
        entry = self._validate(req)
        self.planner.plan(entry, req, self._allowed(entry))

    def load(self, name: str, experts: frozenset[str] | None = None) -> Any:
        """The resident pipeline for `name`, loading it from the local folder the first time."""
        with self._load_lock:
            return self._ensure(self._entry(name), None, experts).pipe

    def unload(self, name: str) -> bool:
        """Drop a resident model and give its memory back; False when it was not loaded."""
        with self._run_lock, self._load_lock:
            return self._drop(name)

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
        on_preview: PreviewCallback | None = None,
    ) -> GenerationResult:
        """Run one request to the end, reporting steps (and previews), stopping early when `cancel` is set."""
        entry = self._validate(req)
        # Before anything loads: a job that fits no allowed placement is refused here.
        plan = self.planner.plan(entry, req, self._allowed(entry))
        with self._run_lock:
            if cancel is not None and cancel.is_set():
                raise GenerationCancelled("cancelled before it started")
            resident = self._ensure(entry, plan, None)
            pipe = self._pipeline_for(resident, req.task)
            self._set_tiling(pipe, plan.tile_vae_for(resident.placement))
            started = time.perf_counter()
            kwargs = self._call_kwargs(req, entry, resident)
            scoped = self._job_scope(resident, pipe, req)
            previews = self.previews_for(req, on_preview)
            last_step = [started]

            def step_end(pipeline: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
                if on_step is not None:
                    on_step(i + 1, pipeline.num_timesteps)
                if cancel is not None and cancel.is_set():
                    raise GenerationCancelled(f"cancelled after step {i + 1} of {pipeline.num_timesteps}")
                if previews is not None and previews.due(i + 1):
                    previews.capture(i + 1, pipeline.num_timesteps,
                                     denoised_estimate(pipeline.scheduler, tensors.get("latents")))
                last_step[0] = time.perf_counter()
                return {}

            def run() -> Any:
                with scoped:
                    return pipe(**kwargs, callback_on_step_end=step_end).frames

            try:
                output = oom.guarded(
                    run, self._oom_advice(req),
                    cleanup=lambda: placing.after_run(resident.pipe, resident.placement),
                    # Kept so the plan's estimates can be checked against what really happened.
                    on_oom=lambda what: self.misses.record(plan, resident.placement, what))
            finally:
                if previews is not None:
                    previews.close(drop=cancel is not None and cancel.is_set())
            if pipe is not resident.pipe:
                # The TI2V image-to-video view shares the offload hooks of the pipeline it came from.
                placing.after_run(resident.pipe, resident.placement)
            frames: np.ndarray | None = None
            latents: torch.Tensor | None = None
            if req.output == "latent":
                latents = output.to("cpu", torch.float32).contiguous()
            else:
                frames = to_uint8(output)
                # The decode ran inside the pipeline call, after the last step.
                self.costs.record("decode", req.width, req.height, req.num_frames * len(req.prompts),
                                  time.perf_counter() - last_step[0])
            seconds = time.perf_counter() - started
        logger.info(
            "generated %d clip(s) %dx%d x%d frames, %d steps with %s in %.2fs",
            len(req.prompts), req.width, req.height, req.num_frames, req.steps, req.model, seconds,
        )  # fmt: skip
        return GenerationResult(frames=frames, latents=latents, fps=FPS[entry.kind], model=req.model, seconds=seconds)

    def previews_for(self, req: GenerationRequest, sink: PreviewCallback | None) -> Previews | None:
        """The job's previews when it asks for them and someone receives them; else None (no cost at all)."""
        if sink is None or req.preview_every <= 0:
            return None
        return Previews(req.preview_every, req.width, req.height, sink, min_interval_s=self.preview_interval_s)

    def experts_for_steps(self, model: str, steps: int, start: int, stop: int,
                          req: GenerationRequest | None = None) -> frozenset[str] | None:
        """The transformers that denoising steps [start, stop) of a `steps`-step job use; None: a one-expert model.

        Read from the scheduler's config and the model's boundary_ratio, without loading anything.
        """
        entry = self._entry(model)
        if not entry.two_experts:
            return None
        index = json.loads((entry.path / "model_index.json").read_text(encoding="utf-8"))
        config = json.loads((entry.path / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
        scheduler = schedulers.build(config, req.scheduler, req.shift) if req else None
        if scheduler is None:
            scheduler = schedulers.type_of(config).from_config(config)
        scheduler.set_timesteps(steps)
        ratio = req.boundary_ratio if req and req.boundary_ratio is not None else index["boundary_ratio"]
        boundary = float(ratio) * scheduler.config.num_train_timesteps
        used = {"transformer" if t >= boundary else "transformer_2" for t in scheduler.timesteps[start:stop]}
        return frozenset(used) or None

    @contextlib.contextmanager
    def exclusive(self, model: str, req: GenerationRequest | None = None,
                  experts: frozenset[str] | None = None) -> Iterator[Any]:
        """Hold the engine (one job at a time) and yield the resident pipeline to drive step by step (split jobs).

        `req` plans the placement as for a whole job; `experts` names the transformers this part of a job
        needs, so an agent running one side of an expert split keeps only that expert resident.
        `req`'s LoRAs (on the experts held), scheduler and boundary apply inside the context.
        """
        entry = self._entry(model)
        plan = self.planner.plan(entry, req, self._allowed(entry), experts=experts) if req else None
        with self._run_lock:
            resident = self._ensure(entry, plan, experts)
            try:
                if req is None:
                    resident.adapters.clear(resident.pipe)
                    yield resident.pipe
                else:
                    with self._job_scope(resident, resident.pipe, req):
                        yield resident.pipe
            finally:
                placing.after_run(resident.pipe, resident.placement)

    def decode(self, model: str, latents: torch.Tensor) -> np.ndarray:
        """Decode latents from output="latent" into uint8 frames (clips, F, H, W, 3), as the pipeline would."""
        with self._run_lock:
            resident = self._ensure(self._entry(model), None, None)
            pipe = resident.pipe
            vae = pipe.vae
            z = latents.to(self.device, vae.dtype)
            mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(z.device, z.dtype)
            # Same arithmetic as the Wan pipelines (divide by 1/std), so the frames match bit for bit.
            inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(z.device, z.dtype)
            with torch.inference_mode():
                video = vae.decode(z / inv_std + mean, return_dict=False)[0]
                frames = pipe.video_processor.postprocess_video(video, output_type="np")
            placing.after_run(pipe, resident.placement)
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
        check_seeds(req.clip_seeds())
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
        for label, value in (("width", req.width), ("height", req.height)):
            if not isinstance(value, int) or value <= 0:
                raise RequestError(f"{label} must be a positive whole number of pixels, got {value!r}")
        n = req.num_frames
        if not isinstance(n, int) or n < 1:
            raise RequestError(f"num_frames must be {rules.temporal}k+1, e.g. 81; got {n}")
        # The same rules (and words) the coordinator checks at Submit, from this agent's Info.
        problems = rules.problems(req.width, req.height, n, req.model, frames_label="num_frames")
        if problems:
            raise RequestError("; ".join(problems))
        for label, value, limit in (("width", req.width, self.max_width), ("height", req.height, self.max_height)):
            if value > limit:
                raise RequestError(f"{label} {value} is over this agent's limit of {limit}")
        if n > self.max_frames:
            raise RequestError(f"num_frames {n} is over this agent's limit of {self.max_frames}")
        if not isinstance(req.steps, int) or not 1 <= req.steps <= MAX_STEPS:
            raise RequestError(f"steps must be within 1..{MAX_STEPS}, got {req.steps!r}")
        for label, scale in (("guidance_scale", req.guidance_scale), ("guidance_scale_2", req.guidance_scale_2)):
            if scale is not None and not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale >= 1):
                raise RequestError(f"{label} must be 1 or more (1 turns guidance off), got {scale!r}")
        if req.guidance_scale_2 is not None and not entry.two_experts:
            raise RequestError(f"guidance_scale_2 applies to two-expert models only; {req.model} has one")
        check_loras(req.loras)
        schedulers.check(req.scheduler, req.shift, req.boundary_ratio, two_experts=entry.two_experts, model=req.model)
        lora.check_request(self.models_root, req.loras, two_experts=entry.two_experts, model=req.model)
        return entry

    def _entry(self, name: str) -> ModelEntry:
        entry = resolve_model(self.models_root, name)
        if entry.kind == "upscale":
            raise RequestError(f"model {name!r} is an upscaler, not a video generation model")
        return entry

    def _allowed(self, entry: ModelEntry) -> list[Placement]:
        """The placements this agent's settings allow for a model, fastest first."""
        return placing.candidates(self.offload, self.weight_storage, quantized=_quantized(entry))

    def _ensure(self, entry: ModelEntry, plan: JobPlan | None, experts: frozenset[str] | None) -> Resident:
        """The resident model, (re)loaded when it is missing, lacks an expert, or its placement cannot hold the job.

        A resident placement that the plan allows is kept even when a faster one would fit this job:
        reloading 28 GB of experts costs more than the difference.
        """
        with self._load_lock:
            resident = self._resident.get(entry.name)
            wanted = frozenset(experts) if experts else frozenset(_expert_names(entry))
            if resident is not None:
                fits = plan is None or resident.placement in plan.fitting
                if wanted <= resident.experts and fits:
                    return resident
                self._drop(entry.name)
            placement = plan.choice if plan else self.planner.default_placement(entry, self._allowed(entry))
            resident = self._resident[entry.name] = self._load(entry, placement, wanted)
            return resident

    def _drop(self, name: str) -> bool:
        resident = self._resident.pop(name, None)
        self._i2v_views.pop(name, None)
        if resident is None:
            return False
        placing.remove(resident.pipe, resident.placement)
        del resident
        release_memory()
        logger.info("unloaded model %s", name)
        return True

    def _load(self, entry: ModelEntry, placement: Placement, wanted: frozenset[str]) -> Resident:
        """Build the pipeline named in model_index.json from the local folder, placed as planned."""
        from diffusers import WanImageToVideoPipeline, WanPipeline

        _allow_missing_ftfy()
        cls = WanImageToVideoPipeline if entry.kind == "i2v" else WanPipeline
        # The Wan VAE loses detail in half precision; diffusers' Wan examples keep it in float32.
        dtype: Any = self.dtype if self.dtype == torch.float32 else {"default": self.dtype, "vae": torch.float32}
        started = time.perf_counter()
        # Experts named in experts.toml (GGUF, single files) load through diffusers' single-file loader;
        # an expert this agent does not need (one side of an expert split) is not loaded at all.
        components: dict[str, Any] = {}
        for name in _expert_names(entry):
            if name not in wanted:
                components[name] = None
            elif name in weights.expert_files(entry.path):
                components[name] = weights.load_expert(entry.path, name, dtype=self.dtype)
        pipe = cls.from_pretrained(str(entry.path), local_files_only=True, dtype=dtype, **components)
        pipe.set_progress_bar_config(disable=True)
        prompts = PromptEncoder(entry.name, cls, pipe.tokenizer, pipe.text_encoder,
                                encode_on=self.planner.encode_device)
        # The text encoder leaves the pipeline: jobs pass embeddings, so it never sits beside an expert.
        # Step-wise callers (split.denoise) find the encoder on the pipeline as `prompt_encoder`.
        pipe.text_encoder = None
        pipe.prompt_encoder = prompts
        # Held in a list that a failure empties: the pipeline must be gone before memory is released.
        held = [pipe]
        del pipe
        oom.guarded(lambda: placing.place(held[0], placement, self.device, compute_dtype=self.dtype,
                                          attention=self.attention),
                    f"model {entry.name!r} does not fit in GPU memory placed as {placement.label}: "
                    "set offload = \"auto\" (or group), or weight_storage = \"fp8\"", cleanup=held.clear)
        pipe = held[0]
        logger.info(
            "loaded %s (%s, %s, %s, %s, experts %s) in %.1fs",
            entry.name, cls.__name__, self.device, str(self.dtype).removeprefix("torch."), placement.label,
            ",".join(sorted(wanted)) or "-", time.perf_counter() - started,
        )  # fmt: skip
        adapters = lora.Adapters(self.models_root, self.lora_budget_bytes, dtype=self.dtype, policy=placement.policy)
        return Resident(entry, pipe, placement, prompts, wanted, adapters)

    @contextlib.contextmanager
    def _job_scope(self, resident: Resident, pipe: Any, req: GenerationRequest) -> Iterator[None]:
        """The job's LoRAs, scheduler and expert boundary for one call.

        Every call sets the adapters it needs (none: all off), so no LoRA rides into the next job; the
        scheduler and boundary are the model's own again afterwards.
        """
        # Split jobs reach here without _validate: the cheap checks again.
        check_loras(req.loras)
        schedulers.check(req.scheduler, req.shift, req.boundary_ratio, two_experts=resident.entry.two_experts,
                         model=resident.entry.name)
        resident.adapters.apply(resident.pipe, req.loras, model=resident.entry.name)
        with schedulers.override(pipe, req.scheduler, req.shift, req.boundary_ratio):
            yield

    def _pipeline_for(self, resident: Resident, task: str) -> Any:
        """The pipeline for a task; TI2V models run i2v through an image-to-video view sharing their modules."""
        pipe, entry = resident.pipe, resident.entry
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

    def _execution_device(self, resident: Resident) -> torch.device:
        """Where the pipeline computes (its hooks' device under offload)."""
        return torch.device(resident.pipe._execution_device)

    def _set_tiling(self, pipe: Any, tile: bool) -> None:
        """Tile the VAE decode as configured; "auto" tiles exactly when the plan says untiled would not fit."""
        want = tile if self.vae_tiling == "auto" else bool(self.vae_tiling)
        if want and hasattr(pipe.vae, "enable_tiling"):
            pipe.vae.enable_tiling()
        elif hasattr(pipe.vae, "disable_tiling"):
            pipe.vae.disable_tiling()

    def _call_kwargs(self, req: GenerationRequest, entry: ModelEntry, resident: Resident) -> dict[str, Any]:
        """Arguments for the pipeline call: embeddings instead of prompts (the text encoder is not in it)."""
        dtype = resident.prompts.dtype
        device = self._execution_device(resident)
        embeds = resident.prompts.encode(list(req.prompts), device=device, dtype=dtype)
        negative = resident.prompts.encode(len(req.prompts) * [req.negative_prompt or ""], device=device, dtype=dtype)
        kwargs: dict[str, Any] = {
            "prompt_embeds": embeds,
            "negative_prompt_embeds": negative,
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

    def _oom_advice(self, req: GenerationRequest) -> str:
        """What to change after running out of GPU memory."""
        tips = ["fewer frames", "a smaller size"]
        if len(req.prompts) > 1:
            tips.append("fewer prompts per batch")
        if self.offload != "auto":
            tips.append("offload = \"auto\"")
        if self.vae_tiling is not True:
            tips.append("vae_tiling = true")
        return (
            f"out of GPU memory generating {len(req.prompts)} clip(s) of {req.num_frames} frames at "
            f"{req.width}x{req.height}; try {', '.join(tips)}"
        )


def _quantized(entry: ModelEntry) -> bool:
    """True when experts.toml names GGUF experts (already quantized: fp8 storage does not apply)."""
    return any(f.suffix.lower() == ".gguf" for f in weights.expert_files(entry.path).values())


def _expert_names(entry: ModelEntry) -> tuple[str, ...]:
    return placing.EXPERTS if entry.two_experts else placing.EXPERTS[:1]


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

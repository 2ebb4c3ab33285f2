"""Wan2.2 text-to-video denoising one step at a time, exactly as WanPipeline.__call__ runs it.

The loop below mirrors diffusers 0.42's WanPipeline.__call__ line for line (prompt
encoding, latents from per-clip CPU generators, the expert switch at boundary_ratio *
num_train_timesteps, guidance / guidance_2, the CFG combination, scheduler.step), so that
a job can stop after any step, move to another agent with its scheduler state, and end
bit for bit where one uninterrupted pipeline call would have. tests/split compares it
against GenerationEngine.generate, which calls the pipeline itself: a diffusers upgrade
that changes the loop fails those tests rather than drifting silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from artifex_agent.engines.generation import GenerationCancelled, GenerationRequest
from artifex_agent.errors import RequestError

logger = logging.getLogger(__name__)

Pass = Literal["cond", "uncond"]
PASSES: tuple[Pass, ...] = ("cond", "uncond")
# WanPipeline.__call__'s default, which GenerationEngine keeps.
MAX_SEQUENCE_LENGTH = 512
# The schedulers whose between-step memory this module knows how to carry. Flow-match Euler (the
# step-distilled LoRAs' scheduler) is one-step: its position is all it remembers.
SUPPORTED_SCHEDULERS = ("UniPCMultistepScheduler", "FlowMatchEulerDiscreteScheduler")


@dataclass
class SchedulerState:
    """Scheduler memory between two steps (UniPC's multistep history; Euler only its position).

    Without UniPC's history a resumed run drifts (by up to 1e-1 here).
    """

    model_outputs: list[torch.Tensor | None]
    timestep_list: list[int | None]
    lower_order_nums: int
    this_order: int | None
    last_sample: torch.Tensor | None
    step_index: int | None
    begin_index: int | None


@dataclass
class DenoiseState:
    """Where a job stands between two steps: everything another agent needs to carry on."""

    next_step: int
    latents: torch.Tensor
    prompt_embeds: torch.Tensor | None
    negative_prompt_embeds: torch.Tensor | None
    scheduler: SchedulerState | None = None


StepCallback = Callable[[int, int], None]


class Denoiser:
    """Drives one resident WanPipeline step by step for one job, with a scheduler of its own."""

    def __init__(self, pipe: Any, req: GenerationRequest) -> None:
        check_splittable(pipe, req)
        self.pipe = pipe
        self.req = req
        self.device = pipe._execution_device
        first = pipe.transformer if pipe.transformer is not None else pipe.transformer_2
        self.transformer_dtype: torch.dtype = first.dtype
        self.in_channels = int(first.config.in_channels)
        self.text_dim = int(first.config.text_dim)
        # A copy: the pipeline's scheduler is shared with every other job on this agent.
        self.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
        self.scheduler.set_timesteps(req.steps, device=self.device)
        self.timesteps = self.scheduler.timesteps
        # The pipeline sets this after preparing latents; nothing in between reads it.
        self.scheduler.set_begin_index(0)
        self.guidance = float(req.guidance_scale)
        self.cfg = self.guidance > 1.0  # WanPipeline.do_classifier_free_guidance
        ratio = pipe.config.boundary_ratio
        if ratio is not None and req.boundary_ratio is not None:
            ratio = req.boundary_ratio  # the job's switch point (a preset's), as the engine's whole run takes it
        self.boundary_timestep = None if ratio is None else ratio * self.scheduler.config.num_train_timesteps
        # GenerationEngine passes guidance_scale_2 (or guidance_scale) for two-expert models only.
        self.guidance_2 = None if ratio is None else float(req.guidance_scale_2 or req.guidance_scale)

    @property
    def total(self) -> int:
        return len(self.timesteps)

    def boundary_step(self) -> int:
        """Index of the first step the low-noise expert runs (== total when it never does)."""
        if self.boundary_timestep is None:
            return self.total
        return sum(1 for t in self.timesteps if t >= self.boundary_timestep)

    def latent_shape(self) -> tuple[int, ...]:
        vae_t, vae_s = self.pipe.vae_scale_factor_temporal, self.pipe.vae_scale_factor_spatial
        return (len(self.req.prompts), self.in_channels, (self.req.num_frames - 1) // vae_t + 1,
                self.req.height // vae_s, self.req.width // vae_s)

    def embeds_shape(self) -> tuple[int, ...]:
        return (len(self.req.prompts), MAX_SEQUENCE_LENGTH, self.text_dim)

    def start(self, passes: Iterable[Pass] = PASSES) -> DenoiseState:
        """Encode the prompts this agent's passes need and draw the initial noise, as the pipeline does."""
        pipe, req, passes = self.pipe, self.req, set(passes)
        prompt_embeds = negative = None
        with torch.no_grad():
            # encode_prompt encodes the prompts and the negatives in two separate text-encoder
            # calls; running only one of them gives the same bits as running both.
            if "cond" in passes:
                prompt_embeds = self._encode(list(req.prompts))
            if self.cfg and "uncond" in passes:
                negative = self._encode(len(req.prompts) * [req.negative_prompt or ""])
            generators = [torch.Generator("cpu").manual_seed(s) for s in req.clip_seeds()]
            latents = pipe.prepare_latents(len(req.prompts), self.in_channels, req.height, req.width,
                                           req.num_frames, torch.float32, self.device, generators, None)
        return DenoiseState(0, latents, prompt_embeds, negative)

    def _encode(self, prompts: list[str]) -> torch.Tensor:
        encoder = getattr(self.pipe, "prompt_encoder", None)
        if encoder is not None:
            # GenerationEngine's pipelines hold no text encoder; its PromptEncoder does (cached, off the GPU).
            embeds = encoder.encode(prompts, device=self.device, dtype=encoder.dtype,
                                    max_sequence_length=MAX_SEQUENCE_LENGTH)
        else:
            embeds, _ = self.pipe.encode_prompt(prompt=prompts, do_classifier_free_guidance=False,
                                                num_videos_per_prompt=1, max_sequence_length=MAX_SEQUENCE_LENGTH,
                                                device=self.device)
        return embeds.to(self.transformer_dtype)

    def expert(self, step: int) -> tuple[Any, float]:
        """The transformer and guidance scale of one step (the pipeline's high/low-noise switch)."""
        t = self.timesteps[step]
        if self.boundary_timestep is None or t >= self.boundary_timestep:
            return self.pipe.transformer, self.guidance
        assert self.guidance_2 is not None
        return self.pipe.transformer_2, self.guidance_2

    def predict(self, state: DenoiseState, which: Pass) -> torch.Tensor:
        """One transformer pass of the next step: "cond" with the prompt, "uncond" with the negative."""
        i = state.next_step
        t = self.timesteps[i]
        model, _ = self.expert(i)
        embeds = state.prompt_embeds if which == "cond" else state.negative_prompt_embeds
        if embeds is None:
            raise RuntimeError(f"the {which} pass needs embeddings this agent was not given")
        latents = state.latents
        latent_model_input = latents.to(self.transformer_dtype)
        if self.pipe.config.expand_timesteps:
            mask = torch.ones(latents.shape, dtype=torch.float32, device=latents.device)
            timestep = (mask[0][0][:, ::2, ::2] * t).flatten().unsqueeze(0).expand(latents.shape[0], -1)
        else:
            timestep = t.expand(latents.shape[0])
        cache = {"step_index": i, "sigma": float(self.scheduler.sigmas[i]), "num_inference_steps": self.total}
        with torch.no_grad(), model.cache_context(which, **cache):
            return model(hidden_states=latent_model_input, timestep=timestep, encoder_hidden_states=embeds,
                         attention_kwargs=None, return_dict=False)[0]

    def advance(self, state: DenoiseState, cond: torch.Tensor, uncond: torch.Tensor | None) -> None:
        """Combine the passes with the step's guidance and take the scheduler step."""
        i = state.next_step
        _, guidance = self.expert(i)
        noise_pred = cond
        if self.cfg:
            if uncond is None:
                raise RuntimeError("guidance > 1 needs the unconditional pass")
            noise_pred = uncond + guidance * (cond - uncond)
        with torch.no_grad():
            state.latents = self.scheduler.step(noise_pred, self.timesteps[i], state.latents, return_dict=False)[0]
        state.next_step = i + 1

    def run(self, state: DenoiseState, stop: int, *, on_step: StepCallback | None = None,
            cancel: threading.Event | None = None) -> DenoiseState:
        """Both passes of steps [state.next_step, stop) on this agent."""
        while state.next_step < min(stop, self.total):
            if cancel is not None and cancel.is_set():
                raise GenerationCancelled(f"cancelled before step {state.next_step + 1} of {self.total}")
            cond = self.predict(state, "cond")
            uncond = self.predict(state, "uncond") if self.cfg else None
            self.advance(state, cond, uncond)
            if on_step is not None:
                on_step(state.next_step, self.total)
        return state

    # ------------------------------------------------------------------ scheduler state

    def snapshot(self, state: DenoiseState) -> DenoiseState:
        """`state` with the scheduler's memory attached (tensors shared, not copied)."""
        s = self.scheduler
        state.scheduler = SchedulerState(
            model_outputs=list(getattr(s, "model_outputs", [])),
            timestep_list=[None if t is None else int(t) for t in getattr(s, "timestep_list", [])],
            lower_order_nums=int(getattr(s, "lower_order_nums", 0)),
            this_order=getattr(s, "this_order", None),
            last_sample=getattr(s, "last_sample", None),
            step_index=s._step_index,
            begin_index=s._begin_index,
        )
        return state

    def restore(self, state: DenoiseState) -> DenoiseState:
        """Put a hand-off's scheduler memory into this job's scheduler and its tensors on this device."""
        st = state.scheduler
        if st is None:
            raise RequestError("the hand-off carries no scheduler state")
        s, dev = self.scheduler, self.device
        outputs, timesteps = getattr(s, "model_outputs", []), getattr(s, "timestep_list", [])
        if len(st.model_outputs) != len(outputs) or len(st.timestep_list) != len(timesteps):
            raise RequestError(f"the hand-off's scheduler keeps {len(st.model_outputs)} outputs, "
                               f"this one keeps {len(outputs)} (solver_order differs)")
        if hasattr(s, "model_outputs"):  # a multistep solver (UniPC)
            s.model_outputs = [None if x is None else x.to(dev) for x in st.model_outputs]
            s.timestep_list = [None if t is None else torch.tensor(t, dtype=self.timesteps.dtype, device=dev)
                               for t in st.timestep_list]
            s.lower_order_nums = st.lower_order_nums
            if st.this_order is not None:
                s.this_order = st.this_order
            s.last_sample = None if st.last_sample is None else st.last_sample.to(dev)
        s._step_index = st.step_index
        s._begin_index = st.begin_index
        state.latents = state.latents.to(dev)
        for name in ("prompt_embeds", "negative_prompt_embeds"):
            value = getattr(state, name)
            if value is not None:
                setattr(state, name, value.to(dev))
        return state

    def fingerprints(self) -> tuple[str, str]:
        """sha256 of the scheduler config and of the timesteps and sigmas it computed for this job."""
        config = {k: v for k, v in dict(self.scheduler.config).items() if not k.startswith("_")}
        config_sha = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
        schedule = hashlib.sha256()
        for t in (self.timesteps, self.scheduler.sigmas):
            cpu = t.detach().to("cpu").contiguous()
            schedule.update(str(cpu.dtype).encode())
            schedule.update(cpu.view(torch.uint8).numpy().tobytes())
        return config_sha, schedule.hexdigest()


def check_splittable(pipe: Any, req: GenerationRequest) -> None:
    """Refuse what the step-wise loop does not reproduce, with a message the user can act on."""
    from diffusers import WanPipeline

    name = type(pipe.scheduler).__name__
    if req.task != "t2v" or not isinstance(pipe, WanPipeline):
        raise RequestError("split jobs run text-to-video only; run image-to-video jobs whole (split none)")
    if name not in SUPPORTED_SCHEDULERS:
        raise RequestError(f"split jobs carry {', '.join(SUPPORTED_SCHEDULERS)} state; {req.model} uses {name}")

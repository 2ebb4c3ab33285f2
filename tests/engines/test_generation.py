"""GenerationEngine on real diffusers Wan pipelines and the tiny checkpoints (CPU, float32)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from artifex_agent.engines import gpu, oom
from artifex_agent.engines.generation import GenerationCancelled, GenerationEngine, GenerationRequest
from artifex_agent.errors import ConfigError, NotFoundError, RequestError, ResourceError
from tests.conftest import TINY_MODELS

torch.set_num_threads(1)

T2V = TINY_MODELS["t2v"]
T2V_A14B = TINY_MODELS["t2v-a14b"]
I2V_A14B = TINY_MODELS["i2v-a14b"]
TI2V = TINY_MODELS["ti2v"]


@pytest.fixture(scope="module")
def engine(models_root: Path) -> Iterator[GenerationEngine]:
    eng = GenerationEngine(models_root, device="cpu", max_frames=33, max_batch=4)
    yield eng
    eng.close()


def request(**changes: object) -> GenerationRequest:
    return dataclasses.replace(GenerationRequest(model=T2V, prompts=["a red cat walking"]), **changes)  # type: ignore[arg-type]


def test_t2v_gives_uint8_clips_and_reports_every_step(engine: GenerationEngine) -> None:
    steps: list[tuple[int, int]] = []
    result = engine.generate(request(), on_step=lambda step, total: steps.append((step, total)))
    assert result.frames is not None and result.latents is None
    assert result.frames.shape == (1, 9, 64, 64, 3) and result.frames.dtype == np.uint8
    assert result.frames.std() > 0
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert (result.fps, result.model) == (16.0, T2V) and result.seconds > 0
    assert engine.loaded() == [T2V]


def test_same_seed_gives_identical_bytes_and_another_seed_differs(engine: GenerationEngine) -> None:
    a = engine.generate(request(seed=7)).frames
    b = engine.generate(request(seed=7)).frames
    c = engine.generate(request(seed=8)).frames
    assert a is not None and b is not None and c is not None
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_a_batch_gives_one_clip_per_prompt_each_with_its_own_noise(engine: GenerationEngine) -> None:
    single = engine.generate(request(seed=3)).frames
    batch = engine.generate(request(prompts=["a red cat walking", "a blue bird flying"], seed=3)).frames
    assert single is not None and batch is not None
    assert batch.shape == (2, 9, 64, 64, 3)
    # Clip 0 starts from the same noise as alone; batched matmuls may round differently in the last bit.
    assert np.abs(batch[0].astype(int) - single[0]).max() <= 2
    assert np.abs(batch[1].astype(int) - single[0]).max() > 2


def test_two_expert_model_switches_experts_at_the_boundary(engine: GenerationEngine) -> None:
    pipe = engine.load(T2V_A14B)
    calls = {"transformer": 0, "transformer_2": 0}
    hooks = [
        getattr(pipe, name).register_forward_pre_hook(lambda *_, n=name: calls.__setitem__(n, calls[n] + 1))
        for name in calls
    ]
    try:
        result = engine.generate(request(model=T2V_A14B, guidance_scale=3.0, guidance_scale_2=2.0, steps=6))
    finally:
        for hook in hooks:
            hook.remove()
    assert result.frames is not None and result.frames.shape == (1, 9, 64, 64, 3)
    # Classifier-free guidance: two passes per step, split between the high- and low-noise experts.
    assert calls["transformer"] > 0 and calls["transformer_2"] > 0
    assert calls["transformer"] + calls["transformer_2"] == 12


def test_i2v_generates_from_an_image_of_any_size(engine: GenerationEngine) -> None:
    image = Image.new("RGB", (123, 77), (220, 40, 30))
    result = engine.generate(request(model=I2V_A14B, task="i2v", image=image, width=96, height=64))
    assert result.frames is not None and result.frames.shape == (1, 9, 64, 96, 3)


def test_ti2v_does_both_text_and_image_to_video(engine: GenerationEngine) -> None:
    t2v = engine.generate(request(model=TI2V))
    i2v = engine.generate(request(model=TI2V, task="i2v", image=Image.new("RGB", (64, 64), (0, 90, 200))))
    assert t2v.frames is not None and i2v.frames is not None
    assert t2v.frames.shape == i2v.frames.shape == (1, 9, 64, 64, 3)
    assert t2v.fps == 24.0


def test_latent_output_decodes_to_the_same_frames(engine: GenerationEngine) -> None:
    rgb = engine.generate(request(seed=11)).frames
    result = engine.generate(request(seed=11, output="latent"))
    assert result.frames is None and result.latents is not None
    latents = result.latents
    # 16 latent channels, (9 - 1) / 4 + 1 latent frames, 64 / 8 latent pixels.
    assert latents.shape == (1, 16, 3, 8, 8) and latents.dtype == torch.float32 and latents.device.type == "cpu"
    decoded = engine.decode(T2V, latents)
    assert rgb is not None and decoded.tobytes() == rgb.tobytes()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"width": 100}, "width must be a multiple of 16 for wan2.2-tiny-t2v; got 100 (try 96 or 112)"),
        ({"height": 0}, "height must be a positive whole number"),
        ({"width": 2048}, "width 2048 is over this agent's limit of 1920"),
        ({"num_frames": 80}, "num_frames must be 4k+1, e.g. 81; got 80"),
        ({"num_frames": 37}, "num_frames 37 is over this agent's limit of 33"),
        ({"steps": 0}, "steps must be within 1..200, got 0"),
        ({"steps": 201}, "steps must be within 1..200"),
        ({"guidance_scale": 0.5}, "guidance_scale must be 1 or more"),
        ({"guidance_scale": float("nan")}, "guidance_scale must be 1 or more"),
        ({"guidance_scale_2": 3.0}, "guidance_scale_2 applies to two-expert models only"),
        ({"prompts": []}, "prompts is empty"),
        ({"prompts": ["ok", "  "]}, "every prompt must be non-empty"),
        ({"prompts": ["a"] * 5}, "5 prompts is over this agent's batch limit of 4"),
        ({"seeds": [1, 2]}, "seeds has 2 values for 1 prompts"),
        ({"seed": -1}, "seed must be within"),
        ({"task": "i2v"}, "is text-to-video; use an i2v or ti2v model"),
        ({"model": I2V_A14B}, "is image-to-video: set task i2v and give an image"),
        ({"model": I2V_A14B, "task": "i2v"}, "task i2v needs an input image"),
        ({"image": Image.new("RGB", (8, 8))}, "an image was given but task is t2v"),
        ({"model": TI2V, "width": 48}, "width must be a multiple of 32"),
        ({"output": "png"}, "output must be 'rgb' or 'latent'"),
    ],
)
def test_invalid_requests_are_refused_with_a_clear_message(
    engine: GenerationEngine, changes: dict, message: str
) -> None:
    with pytest.raises(RequestError) as err:
        engine.validate(request(**changes))
    assert message in str(err.value)


def test_unknown_and_path_like_models_are_refused(engine: GenerationEngine) -> None:
    with pytest.raises(NotFoundError, match=f"available: .*{T2V}"):
        engine.generate(request(model="Wan2.2-T2V-A14B"))
    with pytest.raises(RequestError):
        engine.generate(request(model="../x"))


def test_cancel_stops_between_denoising_steps(engine: GenerationEngine) -> None:
    cancel = threading.Event()
    steps: list[int] = []

    def on_step(step: int, total: int) -> None:
        steps.append(step)
        if step == 2:
            cancel.set()

    with pytest.raises(GenerationCancelled, match="after step 2 of 8"):
        engine.generate(request(steps=8), on_step=on_step, cancel=cancel)
    assert steps == [1, 2]
    with pytest.raises(GenerationCancelled, match="before it started"):
        engine.generate(request(), cancel=cancel)
    assert engine.generate(request()).frames is not None


def test_out_of_memory_frees_memory_advises_and_the_engine_keeps_working(
    engine: GenerationEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe_class = type(engine.load(T2V))
    released: list[bool] = []

    def out_of_memory(self: object, **kwargs: object) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(pipe_class, "__call__", out_of_memory)
    # The one OOM handler (engines/oom.py), which split jobs use too (tests/services/test_oom.py).
    monkeypatch.setattr(oom, "release_memory", lambda: released.append(True))
    with pytest.raises(ResourceError) as err:
        engine.generate(request(prompts=["a", "b"], num_frames=33))
    assert "out of GPU memory generating 2 clip(s) of 33 frames at 64x64" in str(err.value)
    for tip in ("fewer frames", "a smaller size", "fewer prompts per batch", "vae_tiling"):
        assert tip in str(err.value)
    assert released == [True]
    monkeypatch.undo()
    assert engine.generate(request()).frames is not None


def test_unload_drops_a_resident_model(models_root: Path) -> None:
    eng = GenerationEngine(models_root, device="cpu")
    first = eng.load(T2V)
    assert eng.load(T2V) is first
    assert eng.unload(T2V) and not eng.unload(T2V)
    assert eng.loaded() == []


def test_one_job_runs_at_a_time(engine: GenerationEngine) -> None:
    running = 0
    peak = 0
    lock = threading.Lock()

    def on_step(step: int, total: int) -> None:
        nonlocal running, peak
        with lock:
            if step == 1:
                running += 1
            peak = max(peak, running)
            if step == total:
                running -= 1

    threads = [
        threading.Thread(target=engine.generate, args=(request(),), kwargs={"on_step": on_step}) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 1


def test_gpu_helpers_work_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    assert gpu.is_oom(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert gpu.is_oom(RuntimeError("CUDA error: out of memory"))
    wrapped = ValueError("step failed")
    wrapped.__cause__ = RuntimeError("out of memory")
    assert gpu.is_oom(wrapped)
    assert not gpu.is_oom(RuntimeError("shape mismatch"))
    cpu = torch.device("cpu")
    assert gpu.resolve_device("cpu") == cpu
    assert gpu.resolve_dtype("auto", cpu) == torch.float32
    assert gpu.resolve_dtype("bfloat16", cpu) == torch.bfloat16
    with pytest.raises(ConfigError):
        gpu.resolve_dtype("int8", cpu)
    gpu.apply_memory_fraction(0.5, cpu)  # no-op on the CPU
    gpu.release_memory()
    gpus, problem = gpu.gpu_info()
    assert isinstance(gpus, list)
    if not torch.cuda.is_available():
        assert gpus == [] and problem
        with pytest.raises(ConfigError, match="CUDA is not available"):
            gpu.resolve_device("cuda")
    monkeypatch.delenv("PYTORCH_ALLOC_CONF", raising=False)
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:128")
    assert gpu.configure_allocator() == "max_split_size_mb:128"

"""Placement policies, fp8 storage, the detached text encoder and its cache, on CPU with the tiny models.

The CUDA-only calls (offload hooks onto a GPU, stream prefetch, the memory cap, NVML-free budgets)
cannot run here: those tests fake the torch/diffusers call and assert what it receives, so a
wrong argument (like the index-less device that crashed set_per_process_memory_fraction) fails here.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from artifex_agent.config import ClusterConfig
from artifex_agent.engines import gpu, placement
from artifex_agent.engines.generation import GenerationEngine, GenerationRequest
from artifex_agent.engines.placement import Placement
from artifex_agent.errors import ConfigError
from tests.conftest import TINY_MODELS

torch.set_num_threads(1)

A14B = TINY_MODELS["t2v-a14b"]
CUDA = torch.device("cuda")


def a14b_job(**changes: Any) -> GenerationRequest:
    req = GenerationRequest(model=A14B, prompts=["a red cat walking"], steps=4, guidance_scale=3.0,
                            guidance_scale_2=2.0, num_frames=5)
    for key, value in changes.items():
        setattr(req, key, value)
    return req


@pytest.fixture(scope="module")
def reference(models_root: Path) -> np.ndarray:
    eng = GenerationEngine(models_root, device="cpu", offload="none", weight_storage="native")
    try:
        frames = eng.generate(a14b_job()).frames
        assert frames is not None
        return frames
    finally:
        eng.close()


@pytest.mark.parametrize("offload", ["model", "group"])
def test_offload_policies_give_the_same_bits_as_everything_resident(
    models_root: Path, reference: np.ndarray, offload: str
) -> None:
    eng = GenerationEngine(models_root, device="cpu", offload=offload, weight_storage="native")
    try:
        out = eng.generate(a14b_job()).frames
        assert eng.placement_of(A14B) == Placement(offload)
    finally:
        eng.close()
    assert out is not None and np.array_equal(out, reference)


def test_fp8_storage_halves_expert_weights_and_stays_close(models_root: Path, reference: np.ndarray) -> None:
    eng = GenerationEngine(models_root, device="cpu", offload="none", weight_storage="fp8")
    try:
        out = eng.generate(a14b_job()).frames
        pipe = eng.load(A14B)
        for expert in (pipe.transformer, pipe.transformer_2):
            linear = expert.blocks[0].ffn.net[2]
            assert linear.weight.dtype == torch.float8_e4m3fn
            # Norms stay in the compute dtype (diffusers skips them by default): only the big weights shrink.
            assert expert.blocks[0].norm2.weight.dtype == torch.float32
    finally:
        eng.close()
    assert out is not None
    diff = np.abs(out.astype(np.int16) - reference.astype(np.int16))
    # e4m3 keeps 3 mantissa bits (~6% relative per weight); through 1 tiny block and 4 steps the
    # frames move by a few levels at most, and most pixels not at all.
    assert diff.max() <= 8 and diff.mean() < 1.0


def test_the_text_encoder_leaves_the_pipeline_and_prompts_encode_once(models_root: Path) -> None:
    eng = GenerationEngine(models_root, device="cpu")
    try:
        first = eng.generate(a14b_job(prompts=["a dog", "a red cat walking"], seeds=[5, 7])).frames
        pipe = eng.load(A14B)
        assert pipe.text_encoder is None
        encoder = pipe.prompt_encoder
        assert next(encoder.text_encoder.parameters()).device.type == "cpu"
        misses = encoder.misses
        again = eng.generate(a14b_job(prompts=["a red cat walking"], seeds=[7])).frames
        assert encoder.misses == misses  # both the prompt and the negative came from the cache
        assert first is not None and again is not None
        # Each prompt is encoded alone: a clip does not depend on its batch mates.
        assert np.array_equal(first[1:2], again)
    finally:
        eng.close()


def test_a_placement_change_reloads_only_when_the_resident_one_cannot_hold_the_job(models_root: Path) -> None:
    eng = GenerationEngine(models_root, device="cpu", offload="group")
    try:
        pipe = eng.load(A14B)
        eng.generate(a14b_job())
        assert eng.load(A14B) is pipe
    finally:
        eng.close()


def test_one_expert_resident_for_one_side_of_an_expert_split(models_root: Path) -> None:
    eng = GenerationEngine(models_root, device="cpu")
    try:
        with eng.exclusive(A14B, experts=frozenset({"transformer_2"})) as pipe:
            assert pipe.transformer is None and pipe.transformer_2 is not None
        whole = eng.load(A14B)
        assert whole.transformer is not None and whole.transformer_2 is not None
    finally:
        eng.close()


def test_candidates_follow_the_settings() -> None:
    labels = [p.label for p in placement.candidates("auto", "auto", quantized=False)]
    assert labels == ["none", "model", "group", "none+fp8", "model+fp8", "group+fp8", "sequential", "sequential+fp8"]
    assert [p.label for p in placement.candidates("auto", "auto", quantized=True)] == [
        "none", "model", "group", "sequential"]
    assert [p.label for p in placement.candidates("group", "fp8", quantized=False)] == ["group+fp8"]
    # GGUF experts are already quantized: fp8 storage does not apply and they load as they are.
    assert placement.candidates("model", "fp8", quantized=True) == [Placement("model")]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("offload = 'fast'", "offload must be one of auto, none, model, group, sequential"),
        ("weight_storage = 'int4'", "weight_storage must be one of auto, native, fp8"),
        ("attention = 'xformers'", "attention must be one of auto, native, flash, sage"),
        ("vae_tiling = 'yes'", 'vae_tiling must be true, false or "auto"'),
        ("cpu_offload = true\noffload = 'group'", "contradicts offload = 'group'"),
        ("vram_budget_gib = -1", "vram_budget_gib must be 0"),
    ],
)
def test_memory_settings_are_validated_when_the_file_is_read(table: str, message: str) -> None:
    import tomllib

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ClusterConfig.from_dict({"agents": {"pc1": tomllib.loads(table)}})


def test_a_missing_attention_kernel_stops_the_engine_at_start(models_root: Path) -> None:
    with pytest.raises(ConfigError, match="flash_attn package, which is not installed"):
        GenerationEngine(models_root, device="cpu", attention="flash")


def test_sequential_offload_needs_a_gpu(models_root: Path) -> None:
    eng = GenerationEngine(models_root, device="cpu", offload="sequential")
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        eng.load(A14B)


# ---------------------------------------------------------------- CUDA-only calls, faked


class _Recorder:
    """Stands in for a diffusers module or pipeline: records every method call and its arguments."""

    def __init__(self, name: str, calls: list[tuple[str, str, tuple, dict]]) -> None:
        self._name, self._calls = name, calls

    def __getattr__(self, method: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> Any:
            self._calls.append((self._name, method, args, kwargs))
            return self
        return record


class _FakeExpert(torch.nn.Module):
    def __init__(self, calls: list[tuple[str, str, tuple, dict]], name: str) -> None:
        super().__init__()
        self._rec = _Recorder(name, calls)

    def enable_layerwise_casting(self, **kwargs: Any) -> None:
        self._rec.enable_layerwise_casting(**kwargs)

    def enable_group_offload(self, **kwargs: Any) -> None:
        self._rec.enable_group_offload(**kwargs)

    def set_attention_backend(self, name: str) -> None:
        self._rec.set_attention_backend(name)

    def to(self, *args: Any, **kwargs: Any) -> _FakeExpert:  # type: ignore[override]
        self._rec.to(*args, **kwargs)
        return self


def _fake_pipe(calls: list[tuple[str, str, tuple, dict]]) -> Any:
    pipe = _Recorder("pipe", calls)
    object.__setattr__(pipe, "transformer", _FakeExpert(calls, "transformer"))
    object.__setattr__(pipe, "transformer_2", _FakeExpert(calls, "transformer_2"))
    object.__setattr__(pipe, "vae", _Recorder("vae", calls))
    return pipe


def test_group_offload_on_cuda_prefetches_on_a_stream_block_by_block() -> None:
    calls: list[tuple[str, str, tuple, dict]] = []
    placement.place(_fake_pipe(calls), Placement("group", fp8=True), CUDA, compute_dtype=torch.bfloat16,
                    attention="sage")
    by = {(who, what): (args, kwargs) for who, what, args, kwargs in calls}
    for expert in ("transformer", "transformer_2"):
        _, kwargs = by[(expert, "enable_group_offload")]
        assert kwargs["onload_device"] == CUDA and kwargs["offload_device"] == torch.device("cpu")
        assert kwargs["offload_type"] == "block_level" and kwargs["num_blocks_per_group"] == 1
        assert kwargs["use_stream"] is True
        _, kwargs = by[(expert, "enable_layerwise_casting")]
        assert kwargs == {"storage_dtype": torch.float8_e4m3fn, "compute_dtype": torch.bfloat16}
        assert by[(expert, "set_attention_backend")][0] == ("sage",)
    assert by[("vae", "to")][0] == (CUDA,)


def test_model_and_sequential_offload_get_the_gpu_device() -> None:
    for policy, method in (("model", "enable_model_cpu_offload"), ("sequential", "enable_sequential_cpu_offload")):
        calls: list[tuple[str, str, tuple, dict]] = []
        placement.place(_fake_pipe(calls), Placement(policy), torch.device("cuda:1"), compute_dtype=torch.bfloat16)
        assert [(w, m, k) for w, m, _, k in calls] == [("pipe", method, {"device": torch.device("cuda:1")})]


def test_memory_fraction_gets_an_index_for_a_bare_cuda_device(monkeypatch: pytest.MonkeyPatch) -> None:
    got: list[tuple[float, Any]] = []
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, d=None: got.append((f, d)))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    gpu.apply_memory_fraction(0.95, torch.device("cuda"))  # device auto/cuda: crashed on a real GPU before
    gpu.apply_memory_fraction(0.5, torch.device("cuda:1"))
    assert got == [(0.95, 0), (0.5, 1)]
    assert all(isinstance(d, int) for _, d in got)
    with pytest.raises(ConfigError, match="within 0..1"):
        gpu.apply_memory_fraction(1.5, CUDA)


def _fake_cuda(monkeypatch: pytest.MonkeyPatch, *, free: int, total: int, reserved: int = 0,
               allocated: int = 0) -> list[str]:
    calls: list[str] = []
    cuda = torch.cuda
    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(cuda, "device_count", lambda: 2)
    monkeypatch.setattr(cuda, "current_device", lambda: 0)
    monkeypatch.setattr(cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(cuda, "mem_get_info", lambda i=None: (calls.append(f"mem_get_info({i})"), (free, total))[1])
    monkeypatch.setattr(cuda, "memory_reserved", lambda i=None: reserved)
    monkeypatch.setattr(cuda, "memory_allocated", lambda i=None: allocated)
    monkeypatch.setattr(cuda, "set_per_process_memory_fraction", lambda f, d=None: calls.append(f"fraction({f},{d})"))
    for name in ("synchronize", "empty_cache", "ipc_collect"):
        monkeypatch.setattr(cuda, name, lambda *a, _n=name, **k: calls.append(_n))
    return calls


def test_budget_is_the_capped_total_less_what_others_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    gib = 1024**3
    calls = _fake_cuda(monkeypatch, free=20 * gib, total=24 * gib, reserved=2 * gib)
    assert gpu.memory_budget(CUDA) == (22 * gib, 24 * gib)  # free + what our allocator holds
    assert gpu.memory_budget(torch.device("cuda:1"), 0.5) == (12 * gib, 24 * gib)  # the cap is lower
    assert calls == ["mem_get_info(0)", "mem_get_info(1)"]
    assert gpu.memory_budget(torch.device("cpu")) == (0, 0)


def test_release_memory_syncs_and_empties_the_cache_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_cuda(monkeypatch, free=1, total=2)
    gpu.release_memory()
    assert calls == ["synchronize", "empty_cache", "ipc_collect"]


def test_cuda_device_and_dtype_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cuda(monkeypatch, free=1, total=2)
    assert gpu.resolve_device("auto") == CUDA
    assert gpu.resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ConfigError, match="does not exist"):
        gpu.resolve_device("cuda:2")
    assert gpu.resolve_dtype("auto", CUDA) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert gpu.resolve_dtype("auto", CUDA) == torch.float16


def test_allocator_setting_is_applied_only_before_cuda_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    for env in gpu.ALLOC_ENVS:
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert gpu.configure_allocator() is None
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(gpu.sys, "platform", "linux")
    assert gpu.configure_allocator() == "expandable_segments:True"


def test_the_text_encoder_goes_to_the_gpu_only_when_it_fits_beside_what_is_allocated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from artifex_agent.engines.vram import JobPlanner

    gib = 1024**3
    _fake_cuda(monkeypatch, free=24 * gib, total=24 * gib, allocated=10 * gib)
    planner = JobPlanner(CUDA, torch.bfloat16)
    assert planner.encode_device(11 * gib) == CUDA  # 10 + 11 + 1 headroom <= 24
    _fake_cuda(monkeypatch, free=24 * gib, total=24 * gib, allocated=15 * gib)
    assert planner.encode_device(11 * gib) == torch.device("cpu")


def test_an_engine_on_a_bare_cuda_device_with_a_memory_cap_starts(
    models_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's own gpu_memory_fraction = 0.95 with device auto stopped the engine at start on a GPU."""
    calls = _fake_cuda(monkeypatch, free=1, total=2)
    monkeypatch.setattr(gpu, "configure_allocator", lambda: None)
    eng = GenerationEngine(models_root, device="auto", memory_fraction=0.95)
    assert eng.device == CUDA and eng.dtype == torch.bfloat16
    assert "fraction(0.95,0)" in calls


def test_prompt_encoder_cache_is_bounded_and_lru() -> None:
    from artifex_agent.engines.prompts import PromptEncoder

    def fake_encode(holder: Any, *, prompt: list[str], max_sequence_length: int, device: Any, dtype: Any,
                    num_videos_per_prompt: int) -> torch.Tensor:
        return torch.full((1, max_sequence_length, 4), float(len(prompt[0])), dtype=dtype)

    encoder = PromptEncoder("m", types.SimpleNamespace(_get_t5_prompt_embeds=fake_encode), None,  # type: ignore[arg-type]
                            torch.nn.Linear(1, 1), cache_bytes=3 * 8 * 4 * 4)
    cpu = torch.device("cpu")
    out = encoder.encode(["a", "bb", "a"], device=cpu, dtype=torch.float32, max_sequence_length=8)
    assert out.shape == (3, 8, 4) and out[1, 0, 0] == 2 and encoder.misses == 2 and encoder.hits == 1
    encoder.encode(["ccc", "dddd"], device=cpu, dtype=torch.float32, max_sequence_length=8)
    assert len(encoder._cache) == 3  # "bb" was the least recently used ("a" was read after it) and went
    encoder.encode(["a"], device=cpu, dtype=torch.float32, max_sequence_length=8)
    assert encoder.misses == 4
    encoder.encode(["bb"], device=cpu, dtype=torch.float32, max_sequence_length=8)
    assert encoder.misses == 5


def test_a_job_over_the_budget_is_refused_before_anything_loads(models_root: Path, tmp_path: Path) -> None:
    from artifex_agent.errors import ResourceError

    # The tiny model's plan at 1280x720x81 needs ~3.8 GiB (its VAE decode at full size); 2 GiB does not hold it.
    eng = GenerationEngine(models_root, device="cpu", vram_budget_gib=2.0, max_frames=241,
                           misses_file=tmp_path / "misses.jsonl")
    try:
        big = a14b_job(width=1280, height=720, num_frames=81)
        with pytest.raises(ResourceError) as err:
            eng.validate(big)
        with pytest.raises(ResourceError):
            eng.generate(big)
        assert eng.loaded() == []  # refused from the plan, not from an out-of-memory error
        message = str(err.value)
        assert "GiB" in message and "What would fit" in message
        # The suggestions are real: each one is planned again and must pass.
        import re

        frames = re.search(r"(\d+) frames at 1280x720", message)
        assert frames is not None
        eng.validate(a14b_job(width=1280, height=720, num_frames=int(frames.group(1))))
        size = re.search(r"(\d+)x(\d+) at 81 frames", message)
        assert size is not None
        eng.validate(a14b_job(width=int(size.group(1)), height=int(size.group(2)), num_frames=81))
        assert eng.generate(a14b_job()).frames is not None  # a small job still runs
        plan = eng.planner.plan(eng._entry(A14B), a14b_job(), eng._allowed(eng._entry(A14B)))
        assert plan.choice == Placement("none") and plan.estimates[plan.choice] < 2 * 1024**3
    finally:
        eng.close()


def test_an_out_of_memory_miss_is_recorded_for_checking_the_plan(
    models_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from artifex_agent.errors import ResourceError

    eng = GenerationEngine(models_root, device="cpu", vram_budget_gib=2.0, misses_file=tmp_path / "misses.jsonl")
    try:
        pipe_class = type(eng.load(A14B))

        def out_of_memory(self: object, **kwargs: object) -> None:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        monkeypatch.setattr(pipe_class, "__call__", out_of_memory)
        with pytest.raises(ResourceError):
            eng.generate(a14b_job())
    finally:
        eng.close()
    (line,) = (tmp_path / "misses.jsonl").read_text().splitlines()
    miss = json.loads(line)
    assert miss["placement"] == "none" and miss["budget_bytes"] == 2 * 1024**3
    assert 0 < miss["estimated_peak_bytes"] < miss["budget_bytes"] and "out of memory" in miss["error"]


def test_models_lists_format_size_and_vram_and_prints_a_plan(
    models_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from artifex_agent.cli.main import main

    config = tmp_path / "cluster.toml"
    config.write_text(f'[agents.a]\nmodels_root = "{models_root}"\n')
    assert main(["models", "--config", str(config)]) == 0
    listing = capsys.readouterr().out
    assert A14B in listing and "fp32" in listing and "GiB" in listing
    assert main(["models", "--config", str(config), "--plan", "--model", A14B, "--size", "64x64", "--frames", "9",
                 "--budget-gib", "24"]) == 0
    plan = capsys.readouterr().out
    assert "budget 24.0 GiB (--budget-gib)" in plan and "group+fp8" in plan and "*" in plan
    assert main(["models", "--config", str(config), "--plan", "--model", A14B, "--budget-gib", "2"]) == 1
    assert "What would fit" in " ".join(capsys.readouterr().out.split())

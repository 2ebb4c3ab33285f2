"""LoRAs per job on the tiny checkpoints: formats, strengths, experts, the LRU, refusals; per-job schedulers."""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from artifex_agent.engines import lora
from artifex_agent.engines.generation import GenerationEngine, GenerationRequest
from artifex_agent.errors import NotFoundError, RequestError
from artifex_agent.lora_ref import LoraRef
from tests.conftest import TINY_MODELS
from tests.lora_fixture import to_comfy

torch.set_num_threads(1)

A14B = TINY_MODELS["t2v-a14b"]
T2V = TINY_MODELS["t2v"]
# Attention and FFN: musubi-tuner's files always hold both, and diffusers' converter expects them.
TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2")


def make_lora(model_folder: Path, *, seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """A PEFT LoRA on the tiny transformer's attention and FFN, random lora_B (it changes the output)."""
    return {k: v * scale for k, v in lora.tiny_lora(model_folder, seed=seed, targets=TARGETS).items()}


def to_musubi(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ComfyUI-keyed LoRA as musubi-tuner writes it: lora_unet_blocks_0_self_attn_q.lora_down.weight."""
    out = {}
    for key, tensor in to_comfy(state).items():
        name = key.removeprefix("diffusion_model.")
        for tail in (".lora_down.weight", ".lora_up.weight", ".alpha"):
            if name.endswith(tail):
                out["lora_unet_" + name.removesuffix(tail).replace(".", "_") + tail] = tensor
    return out


@pytest.fixture(scope="module")
def root(models_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models root with the tiny A14B and one-expert models and a loras/ folder of test LoRAs."""
    base = tmp_path_factory.mktemp("lora-models")
    for name in (A14B, T2V):
        shutil.copytree(models_root / name, base / name)
    loras = base / "loras"
    loras.mkdir()
    style = make_lora(base / A14B, seed=1)
    save_file(style, str(loras / "style.safetensors"))
    save_file(to_comfy(style), str(loras / "style-comfy.safetensors"))
    save_file(to_musubi(style), str(loras / "style-musubi.safetensors"))
    save_file(make_lora(base / A14B, seed=2), str(loras / "other.safetensors"))
    save_file(make_lora(base / A14B, seed=3, scale=3.0), str(loras / "strong.safetensors"))
    wrong = dict(style)
    key = "transformer.blocks.0.attn1.to_q.lora_A.weight"
    wrong[key] = torch.zeros(wrong[key].shape[0], 48)
    save_file(wrong, str(loras / "wrong-shape.safetensors"))
    save_file({"transformer.blocks.7.attn1.to_q.lora_A.weight": torch.zeros(4, 24),
               "transformer.blocks.7.attn1.to_q.lora_B.weight": torch.zeros(24, 4)},
              str(loras / "elsewhere.safetensors"))
    return base


@pytest.fixture(scope="module")
def engine(root: Path) -> Iterator[GenerationEngine]:
    eng = GenerationEngine(root, device="cpu", offload="none", weight_storage="native")
    yield eng
    eng.close()


def job(*loras: LoraRef, **changes: Any) -> GenerationRequest:
    req = GenerationRequest(model=A14B, prompts=["a red cat walking"], steps=4, guidance_scale=1.0, num_frames=5,
                            output="latent", loras=tuple(loras))
    return dataclasses.replace(req, **changes)


def latents(eng: GenerationEngine, req: GenerationRequest) -> torch.Tensor:
    out = eng.generate(req).latents
    assert out is not None
    return out


@pytest.fixture(scope="module")
def base(engine: GenerationEngine) -> torch.Tensor:
    return latents(engine, job())


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.numpy().tobytes() == b.numpy().tobytes()


def test_diffusers_comfyui_and_musubi_keyed_files_load_and_agree(
    engine: GenerationEngine, base: torch.Tensor
) -> None:
    a = latents(engine, job(LoraRef("style")))
    assert not same(a, base)
    for name in ("style-comfy", "style-musubi"):
        torch.testing.assert_close(latents(engine, job(LoraRef(name))), a, rtol=1e-4, atol=1e-5)


def test_a_one_expert_model_takes_both_and_high_on_its_only_transformer(engine: GenerationEngine) -> None:
    plain = latents(engine, job(model=T2V))
    both = latents(engine, job(LoraRef("style"), model=T2V))
    assert not same(both, plain)
    assert same(latents(engine, job(LoraRef("style", 1.0, "high"), model=T2V)), both)
    assert same(latents(engine, job(model=T2V)), plain)


def test_output_moves_with_strength_and_strength_zero_is_the_base_bit_for_bit(
    engine: GenerationEngine, base: torch.Tensor
) -> None:
    half = latents(engine, job(LoraRef("style", 0.5)))
    full = latents(engine, job(LoraRef("style", 1.0)))
    assert (half - base).abs().mean() < (full - base).abs().mean()
    assert same(latents(engine, job(LoraRef("style", 0.0))), base)


def test_a_job_without_loras_after_one_with_them_is_the_base_bit_for_bit(
    engine: GenerationEngine, base: torch.Tensor
) -> None:
    latents(engine, job(LoraRef("style"), LoraRef("other", 0.7)))
    assert same(latents(engine, job()), base)
    # And one job's LoRA does not ride along into the next job's set.
    only_other = latents(engine, job(LoraRef("other")))
    latents(engine, job(LoraRef("style"), LoraRef("other")))
    assert same(latents(engine, job(LoraRef("other"))), only_other)


def stepped(engine: GenerationEngine, req: GenerationRequest) -> tuple[list[str], list[torch.Tensor]]:
    """Drive the pipeline inside `exclusive` as split jobs do: which expert ran each pass, latents after each step."""
    calls: list[str] = []
    steps: list[torch.Tensor] = []

    def grab(p: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        steps.append(tensors["latents"].clone())
        return {}

    with engine.exclusive(A14B, req) as pipe:
        for name, label in (("transformer", "high"), ("transformer_2", "low")):
            module = getattr(pipe, name)
            module.register_forward_pre_hook(lambda *_, label=label: calls.append(label))
        try:
            embeds = pipe.prompt_encoder.encode(req.prompts, device=torch.device("cpu"), dtype=torch.float32)
            pipe(prompt_embeds=embeds, num_frames=5, width=64, height=64, num_inference_steps=4,
                 guidance_scale=1.0, generator=torch.Generator("cpu").manual_seed(0), output_type="latent",
                 callback_on_step_end=grab)
        finally:
            for name in ("transformer", "transformer_2"):
                getattr(pipe, name)._forward_pre_hooks.clear()
    return calls, steps


def test_a_low_noise_lora_leaves_the_high_noise_steps_alone(engine: GenerationEngine) -> None:
    req = job(LoraRef("strong", 1.0, "low"))
    assert engine.experts_for_steps(A14B, 4, 0, 1, req) == frozenset({"transformer"})
    base_calls, base_steps = stepped(engine, job())
    calls, steps = stepped(engine, req)
    assert calls == base_calls and calls[0] == "high" and "low" in calls
    assert same(steps[0], base_steps[0])
    assert not same(steps[-1], base_steps[-1])
    # A high-noise-only LoRA changes the very first step.
    assert not same(latents(engine, job(LoraRef("strong", 1.0, "high"), steps=1)), latents(engine, job(steps=1)))


def test_a_wrong_shape_or_foreign_lora_is_refused_naming_the_layer(engine: GenerationEngine) -> None:
    with pytest.raises(RequestError, match=r"blocks\.0\.attn1\.to_q lora_A has shape \[4, 48\].*\(rank, 24\)"):
        engine.generate(job(LoraRef("wrong-shape")))
    with pytest.raises(RequestError, match="another model family"):
        engine.generate(job(LoraRef("elsewhere")))


def test_a_broken_file_is_refused_as_the_requests_problem(engine: GenerationEngine, root: Path) -> None:
    broken = root / "loras" / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    try:
        with pytest.raises(RequestError, match="broken"):
            engine.generate(job(LoraRef("broken")))
        assert {i.name: i.format for i in lora.list_loras(root)}["broken"] == "?"
    finally:
        broken.unlink()
    assert same(latents(engine, job()), latents(engine, job(LoraRef("style", 0.0))))


def test_unknown_and_pickle_loras_are_refused_before_anything_opens_them(
    engine: GenerationEngine, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(NotFoundError, match=str(root / "loras")):
        engine.validate(job(LoraRef("nope")))
    # A FIFO: opening it would block the test forever, so a pass proves it was never opened.
    for suffix in (".ckpt", ".pt"):
        os.mkfifo(root / "loras" / f"evil{suffix}")
    opened: list[Any] = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: opened.append(a))
    try:
        for name in ("evil", "evil.ckpt", "evil.pt"):
            with pytest.raises(RequestError, match="only .safetensors"):
                engine.validate(job(LoraRef(name)))
        assert [i.name for i in lora.list_loras(root)] == sorted(
            ["elsewhere", "other", "strong", "style", "style-comfy", "style-musubi", "wrong-shape"])
    finally:
        for suffix in (".ckpt", ".pt"):
            (root / "loras" / f"evil{suffix}").unlink()
    assert not opened
    outside = root.parent / "outside.safetensors"
    shutil.copy(root / "loras" / "style.safetensors", outside)
    (root / "loras" / "link.safetensors").symlink_to(outside)
    try:
        with pytest.raises(RequestError, match="outside"):
            engine.validate(job(LoraRef("link")))
    finally:
        (root / "loras" / "link.safetensors").unlink()


def test_a_low_noise_lora_on_a_one_expert_model_is_refused(engine: GenerationEngine) -> None:
    with pytest.raises(RequestError, match="one expert"):
        engine.validate(job(LoraRef("style", 1.0, "low"), model=T2V, num_frames=5))


def test_the_header_gives_format_rank_and_family(root: Path) -> None:
    infos = {i.name: i for i in lora.list_loras(root)}
    assert (infos["style"].format, infos["style"].rank, infos["style"].family) == ("diffusers", 4, "dim 24")
    assert (infos["style-comfy"].format, infos["style-comfy"].family) == ("comfyui", "dim 24")
    assert (infos["style-musubi"].format, infos["style-musubi"].rank) == ("musubi", 4)
    assert infos["style"].size == (root / "loras" / "style.safetensors").stat().st_size


def test_resident_loras_are_not_reloaded_and_the_lru_evicts_past_its_budget(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = lora.load_adapter
    monkeypatch.setattr(lora, "load_adapter", lambda pipe, sd, name, target, **kw: calls.append(target) or real(
        pipe, sd, name, target, **kw))
    size = sum(t.numel() * 4 for t in make_lora(root / A14B, seed=1).values())
    # Room for three adapters: one LoRA on both experts, and one more.
    eng = GenerationEngine(root, device="cpu", offload="none", lora_budget_bytes=3 * size)
    try:
        for _ in range(3):
            eng.generate(job(LoraRef("style")))
        assert calls == ["transformer", "transformer_2"]
        eng.generate(job(LoraRef("other")))
        adapters = eng._resident[A14B].adapters
        # The least recently used adapter went; the job's own never do.
        assert adapters.resident() == [("transformer_2", "style"), ("transformer", "other"), ("transformer_2", "other")]
        assert adapters.resident_bytes == 3 * size
        eng.generate(job(LoraRef("style")))
        assert calls[4:] == ["transformer"]
    finally:
        eng.close()


@pytest.mark.parametrize("offload", ["model", "group"])
def test_offloaded_placements_with_a_lora_give_the_same_bits(
    root: Path, engine: GenerationEngine, offload: str
) -> None:
    want = latents(engine, job(LoraRef("style"), LoraRef("other", 0.5, "low")))
    eng = GenerationEngine(root, device="cpu", offload=offload, weight_storage="native")
    try:
        assert same(latents(eng, job(LoraRef("style"), LoraRef("other", 0.5, "low"))), want)
        assert same(latents(eng, job()), latents(engine, job()))
    finally:
        eng.close()


def test_a_lora_on_fp8_experts_works_and_is_gone_after_the_job(root: Path, engine: GenerationEngine) -> None:
    eng = GenerationEngine(root, device="cpu", offload="none", weight_storage="fp8")
    try:
        plain = latents(eng, job())
        with_lora = latents(eng, job(LoraRef("style")))
        assert not same(with_lora, plain)
        # Close to the same LoRA on native weights: fp8 storage costs what it costs without a LoRA.
        native = latents(engine, job(LoraRef("style")))
        assert (with_lora - native).abs().max() < 5 * (plain - latents(engine, job())).abs().max() + 1e-3
        assert same(latents(eng, job()), plain)
    finally:
        eng.close()


def test_a_lora_on_a_gguf_expert_works_and_is_gone_after_the_job(tmp_path: Path) -> None:
    from artifex_agent.engines.checkpoint import build_tiny_checkpoint
    from tests.engines.gguf_fixture import write_gguf_expert

    native, quant = tmp_path / "native", tmp_path / "gguf"
    # Rows of 32: Q8_0 quantizes in blocks of 32 values, so the expert's linear layers are really GGUFLinear.
    build_tiny_checkpoint(native / "m", variant="t2v-a14b", heads=2, head_dim=16, ffn_dim=64, text_dim=32)
    shutil.copytree(native / "m", quant / "m")
    write_gguf_expert(quant / "m", "transformer", quant / "m" / "high-Q8_0.gguf", qtype="Q8_0")
    for weights in (quant / "m" / "transformer").glob("*.safetensors"):
        weights.unlink()
    (quant / "m" / "experts.toml").write_text('transformer = "high-Q8_0.gguf"\n')
    state = lora.tiny_lora(native / "m", seed=1)
    outputs = {}
    for label, where in (("native", native), ("gguf", quant)):
        (where / "loras").mkdir()
        save_file(state, str(where / "loras" / "style.safetensors"))
        eng = GenerationEngine(where, device="cpu", offload="none")
        try:
            req = job(model="m")
            outputs[label] = latents(eng, req)
            outputs[label + "+lora"] = latents(eng, dataclasses.replace(req, loras=(LoraRef("style", 1.0, "high"),)))
            assert same(latents(eng, req), outputs[label])
            layer = eng.load("m").transformer.blocks[0].attn1.to_q
            assert type(layer.base_layer).__name__ == ("GGUFLinear" if label == "gguf" else "Linear")
        finally:
            eng.close()
    # PEFT wraps diffusers' GGUFLinear: the LoRA adds to the dequantized layer's output, as on native weights.
    effect = (outputs["gguf+lora"] - outputs["gguf"]).abs().max()
    assert effect > 0.01
    assert (outputs["gguf+lora"] - outputs["native+lora"]).abs().max() < 0.1 * effect


def test_euler_with_four_steps_runs_and_differs_from_unipc(engine: GenerationEngine, base: torch.Tensor) -> None:
    euler = latents(engine, job(scheduler="euler"))
    assert torch.isfinite(euler).all() and not same(euler, base)
    assert same(latents(engine, job(scheduler="unipc")), base)
    assert not same(latents(engine, job(scheduler="unipc", shift=8.0)), base)
    # Restored after the job: the next job gets the model's own scheduler.
    assert same(latents(engine, job()), base)
    with pytest.raises(RequestError, match="scheduler"):
        engine.validate(job(scheduler="ddim"))


def test_a_boundary_override_moves_steps_between_experts(engine: GenerationEngine, base: torch.Tensor) -> None:
    own = engine.experts_for_steps(A14B, 4, 0, 4)
    assert own == frozenset({"transformer", "transformer_2"})
    assert engine.experts_for_steps(A14B, 4, 0, 4, job(boundary_ratio=0.0)) == frozenset({"transformer"})
    assert engine.experts_for_steps(A14B, 4, 0, 4, job(boundary_ratio=1.0)) == frozenset({"transformer_2"})
    assert not same(latents(engine, job(boundary_ratio=0.0)), base)
    assert same(latents(engine, job()), base)
    with pytest.raises(RequestError, match="two-expert"):
        engine.validate(job(model=T2V, boundary_ratio=0.5))


def test_models_lists_loras_with_family_format_rank_and_size(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from artifex_agent.cli.main import main

    config = tmp_path / "cluster.toml"
    config.write_text(f'[agents.a]\nmodels_root = "{root}"\n')
    assert main(["models", "--config", str(config)]) == 0
    listing = capsys.readouterr().out
    assert "style-comfy" in listing and "comfyui" in listing and "dim 24" in listing and "INCOMPLETE" not in listing
    assert main(["models", "--config", str(config), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {m["name"] for m in data["models"]} == {A14B, T2V}
    style = next(i for i in data["loras"] if i["name"] == "style")
    assert (style["format"], style["rank"], style["family"]) == ("diffusers", 4, "dim 24")


def test_one_side_of_an_expert_split_applies_the_loras_of_the_expert_it_holds(
    root: Path, engine: GenerationEngine
) -> None:
    req = job(LoraRef("style"), LoraRef("other", 0.5, "high"))
    torch.manual_seed(0)
    x, t, text = torch.randn(1, 16, 2, 8, 8), torch.tensor([500.0]), torch.randn(1, 8, 32)
    low = GenerationEngine(root, device="cpu", offload="none")
    try:
        with engine.exclusive(A14B, req) as whole, torch.inference_mode():
            want = whole.transformer_2(x, t, text, return_dict=False)[0]
        with low.exclusive(A14B, req, experts=frozenset({"transformer_2"})) as side, torch.inference_mode():
            assert side.transformer is None
            got = side.transformer_2(x, t, text, return_dict=False)[0]
        with low.exclusive(A14B, job(), experts=frozenset({"transformer_2"})) as side, torch.inference_mode():
            plain = side.transformer_2(x, t, text, return_dict=False)[0]
        assert low._resident[A14B].adapters.resident() == [("transformer_2", "style")]
    finally:
        low.close()
    assert same(got, want) and not same(got, plain)


def test_loras_are_refused_under_sequential_offload(root: Path, engine: GenerationEngine) -> None:
    adapters = lora.Adapters(root, policy="sequential")
    with pytest.raises(RequestError, match="sequential"):
        adapters.apply(engine.load(A14B), (LoraRef("style"),), model=A14B)
    assert adapters.loads == 0

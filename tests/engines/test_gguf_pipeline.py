"""A two-expert model whose experts are GGUF files named in experts.toml, through the whole engine."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from artifex_agent.engines.checkpoint import build_tiny_checkpoint
from artifex_agent.engines.generation import GenerationEngine, GenerationRequest
from artifex_agent.engines.models import inspect_model
from artifex_agent.errors import ConfigError
from tests.engines.gguf_fixture import write_gguf_expert

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same random experts twice: as diffusers safetensors, and as Q8_0 GGUF files with only their configs."""
    native = tmp_path_factory.mktemp("native")
    # Rows of 32: Q8_0 quantizes in blocks of 32 values, so every big weight is really quantized.
    build_tiny_checkpoint(native / "m", variant="t2v-a14b", heads=2, head_dim=16, ffn_dim=64, text_dim=32)
    quant = tmp_path_factory.mktemp("gguf")
    shutil.copytree(native / "m", quant / "m")
    for component, name in (("transformer", "high-Q8_0.gguf"), ("transformer_2", "low-Q8_0.gguf")):
        write_gguf_expert(quant / "m", component, quant / "m" / name, qtype="Q8_0")
        for weights in (quant / "m" / component).glob("*.safetensors"):
            weights.unlink()
    (quant / "m" / "experts.toml").write_text('transformer = "high-Q8_0.gguf"\ntransformer_2 = "low-Q8_0.gguf"\n')
    return native, quant


def job() -> GenerationRequest:
    return GenerationRequest(model="m", prompts=["a red cat walking"], steps=4, guidance_scale=3.0, num_frames=5)


def test_gguf_experts_generate_close_to_the_native_weights(roots: tuple[Path, Path]) -> None:
    native, quant = roots
    assert inspect_model(quant / "m").complete
    outputs = []
    for root in (native, quant):
        eng = GenerationEngine(root, device="cpu")
        try:
            outputs.append(eng.generate(job()).frames)
            if root is quant:
                pipe = eng.load("m")
                assert all(getattr(t, "is_quantized", False) for t in (pipe.transformer, pipe.transformer_2))
        finally:
            eng.close()
    a, b = (o.astype(np.int16) for o in outputs if o is not None)
    # Q8_0 keeps each weight within 1/254 of its block's largest; through 4 steps of CFG the frames
    # move by at most a level or two (measured here: max 1, mean 0.01, while pixels sit ~39 levels from
    # mid-grey on average). The bound leaves room for other BLAS builds, not for a broken load.
    diff = np.abs(a - b)
    assert diff.max() <= 4 and diff.mean() < 0.1


def test_fp8_storage_is_refused_for_gguf_experts_not_silently_stacked(roots: tuple[Path, Path]) -> None:
    _, quant = roots
    eng = GenerationEngine(quant, device="cpu", offload="none", weight_storage="fp8")
    try:
        # weight_storage = fp8 does not apply to GGUF experts: they load as they are (see placement.candidates).
        eng.generate(job())
        placement = eng.placement_of("m")
        assert placement is not None and not placement.fp8
    finally:
        eng.close()


def test_a_bad_experts_toml_makes_the_model_incomplete_with_the_reason(
    roots: tuple[Path, Path], tmp_path: Path
) -> None:
    _, quant = roots
    broken = tmp_path / "m"
    shutil.copytree(quant / "m", broken)
    (broken / "experts.toml").write_text('transformer = "../outside.gguf"\n')
    entry = inspect_model(broken)
    assert not entry.complete and ".." in entry.problem
    with pytest.raises(ConfigError):
        from artifex_agent.engines.weights import expert_files

        expert_files(broken)

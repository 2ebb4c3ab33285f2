"""The tiny Wan2.2 checkpoint builder and model discovery on real diffusers folders."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest

from artifex_agent.engines.checkpoint import build_tiny_checkpoint, ensure_tiny_checkpoint
from artifex_agent.engines.models import list_models, resolve_model
from artifex_agent.errors import NotFoundError, RequestError
from tests.conftest import TINY_MODELS


def digests(folder: Path) -> dict[str, str]:
    return {
        f.relative_to(folder).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(folder.rglob("*"))
        if f.is_file()
    }


def copy_model(models_root: Path, variant: str, dest_root: Path) -> Path:
    """A private copy of a tiny model, free to damage."""
    dest = dest_root / TINY_MODELS[variant]
    shutil.copytree(models_root / TINY_MODELS[variant], dest)
    return dest


def test_build_is_deterministic_and_tiny(tmp_path: Path) -> None:
    build_tiny_checkpoint(tmp_path / "warm")  # imports diffusers/transformers once, outside the timing
    started = time.perf_counter()
    a = build_tiny_checkpoint(tmp_path / "a", variant="i2v-a14b", seed=3)
    elapsed = time.perf_counter() - started
    b = build_tiny_checkpoint(tmp_path / "b", variant="i2v-a14b", seed=3)
    c = build_tiny_checkpoint(tmp_path / "c", variant="i2v-a14b", seed=4)
    assert digests(a) == digests(b)
    changed = {k for k, v in digests(c).items() if digests(a)[k] != v}
    assert changed == {
        "text_encoder/model.safetensors",
        "transformer/diffusion_pytorch_model.safetensors",
        "transformer_2/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    }
    assert sum(f.stat().st_size for f in a.rglob("*") if f.is_file()) < 1_000_000
    assert elapsed < 5


def test_build_writes_the_wan22_layout(models_root: Path) -> None:
    t2v = json.loads((models_root / TINY_MODELS["t2v-a14b"] / "model_index.json").read_text())
    i2v = json.loads((models_root / TINY_MODELS["i2v-a14b"] / "model_index.json").read_text())
    ti2v = json.loads((models_root / TINY_MODELS["ti2v"] / "model_index.json").read_text())
    assert (t2v["_class_name"], t2v["boundary_ratio"]) == ("WanPipeline", 0.875)
    assert (i2v["_class_name"], i2v["boundary_ratio"], i2v["image_encoder"]) == (
        "WanImageToVideoPipeline",
        0.9,
        [None, None],
    )
    assert ti2v["expand_timesteps"] is True
    scheduler = json.loads((models_root / TINY_MODELS["t2v"] / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["_class_name"] == "UniPCMultistepScheduler"
    assert (scheduler["prediction_type"], scheduler["use_flow_sigmas"]) == ("flow_prediction", True)
    transformer = json.loads((models_root / TINY_MODELS["i2v-a14b"] / "transformer" / "config.json").read_text())
    assert transformer["in_channels"] == 2 * 16 + 4  # noise + mask + image latents


def test_knobs_make_a_heavier_model(tmp_path: Path) -> None:
    small = build_tiny_checkpoint(tmp_path / "small")
    big = build_tiny_checkpoint(tmp_path / "big", layers=3, heads=4, head_dim=24)
    weights = "transformer/diffusion_pytorch_model.safetensors"
    assert (big / weights).stat().st_size > 4 * (small / weights).stat().st_size
    assert json.loads((big / "transformer" / "config.json").read_text())["num_layers"] == 3


def test_ensure_builds_once_and_leaves_no_temp_folder(tmp_path: Path) -> None:
    path = ensure_tiny_checkpoint(tmp_path, "m", variant="t2v")
    stamp = (path / "model_index.json").stat().st_mtime_ns
    assert ensure_tiny_checkpoint(tmp_path, "m", variant="t2v") == path
    assert (path / "model_index.json").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_list_models_finds_every_variant_complete(models_root: Path) -> None:
    found = {m.name: m for m in list_models(models_root)}
    assert set(found) == set(TINY_MODELS.values())
    assert all(m.complete and not m.problem for m in found.values())
    assert found[TINY_MODELS["t2v"]].kind == "t2v" and not found[TINY_MODELS["t2v"]].two_experts
    assert found[TINY_MODELS["t2v-a14b"]].kind == "t2v" and found[TINY_MODELS["t2v-a14b"]].two_experts
    assert found[TINY_MODELS["i2v-a14b"]].kind == "i2v" and found[TINY_MODELS["i2v-a14b"]].two_experts
    assert found[TINY_MODELS["ti2v"]].kind == "ti2v"


def test_upscale_weights_are_models_and_hidden_folders_are_not(tmp_path: Path) -> None:
    (tmp_path / "upscale").mkdir()
    (tmp_path / "upscale" / "4x-Sharp.safetensors").write_bytes(b"x")
    (tmp_path / "upscale" / "4x-Sharp.pth").write_bytes(b"x")
    (tmp_path / "upscale" / "empty.pth").write_bytes(b"")
    (tmp_path / "upscale" / "notes.txt").write_text("hi")
    (tmp_path / ".half-built.part").mkdir()
    found = {m.name: m for m in list_models(tmp_path)}
    assert set(found) == {"4x-Sharp", "empty"}
    assert found["4x-Sharp"].path.name == "4x-Sharp.safetensors" and found["4x-Sharp"].kind == "upscale"
    assert not found["empty"].complete
    assert resolve_model(tmp_path, "4x-Sharp").complete


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda m: shutil.rmtree(m / "transformer_2"), "transformer_2/ (WanTransformer3DModel) is missing"),
        (lambda m: (m / "vae" / "diffusion_pytorch_model.safetensors").unlink(), "vae/ has no weights file"),
        (lambda m: (m / "text_encoder" / "config.json").unlink(), "text_encoder/ has no config.json"),
        (lambda m: (m / "scheduler" / "scheduler_config.json").unlink(), "scheduler/ has no scheduler_config.json"),
        (lambda m: (m / "model_index.json").write_text("{"), "model_index.json cannot be read"),
        (lambda m: (m / "model_index.json").unlink(), "no model_index.json"),
    ],
)
def test_incomplete_model_names_what_is_missing(models_root: Path, tmp_path: Path, damage, expected: str) -> None:
    model = copy_model(models_root, "t2v-a14b", tmp_path)
    damage(model)
    (entry,) = list_models(tmp_path)
    assert not entry.complete and expected in entry.problem
    with pytest.raises(NotFoundError, match="incomplete") as err:
        resolve_model(tmp_path, model.name)
    assert expected in str(err.value)


def test_missing_weight_shard_is_reported(models_root: Path, tmp_path: Path) -> None:
    model = copy_model(models_root, "t2v", tmp_path)
    weights = model / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.rename(model / "transformer" / "diffusion_pytorch_model-00001-of-00002.safetensors")
    index = {
        "weight_map": {
            "a": "diffusion_pytorch_model-00001-of-00002.safetensors",
            "b": "diffusion_pytorch_model-00002-of-00002.safetensors",
        }
    }
    (model / "transformer" / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    (entry,) = list_models(tmp_path)
    assert "missing weight shard(s): diffusion_pytorch_model-00002-of-00002.safetensors" in entry.problem


def test_unknown_model_lists_what_is_available(models_root: Path) -> None:
    with pytest.raises(NotFoundError) as err:
        resolve_model(models_root, "Wan2.2-T2V-A14B")
    assert "'Wan2.2-T2V-A14B' is not in" in str(err.value)
    assert all(name in str(err.value) for name in TINY_MODELS.values())


@pytest.mark.parametrize("name", ["../x", "..", "a/b", "a\\b", "/etc", "C:\\models\\x", "C:x", ".hidden", "", " "])
def test_model_names_that_are_paths_are_refused(models_root: Path, name: str) -> None:
    with pytest.raises(RequestError):
        resolve_model(models_root, name)


def test_missing_root_has_no_models(tmp_path: Path) -> None:
    assert list_models(tmp_path / "nope") == []
    with pytest.raises(NotFoundError, match="available: none"):
        resolve_model(tmp_path / "nope", "x")

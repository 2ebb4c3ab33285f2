"""Upscaling with the plain resampler and with real spandrel models loaded safely."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from artifex_agent.engines.upscale import Upscaler, clear_model_cache
from artifex_agent.errors import NotFoundError, RequestError

torch.set_num_threads(1)


def esrgan_state(scale: int = 2, nf: int = 8, gc: int = 32, blocks: int = 1) -> dict[str, torch.Tensor]:
    """Random weights in the old ESRGAN key layout (model.N / model.1.sub.B.RDBr.convC.0)."""
    gen = torch.Generator().manual_seed(scale)
    state: dict[str, torch.Tensor] = {}

    def conv(prefix: str, out_ch: int, in_ch: int) -> None:
        state[f"{prefix}.weight"] = torch.randn(out_ch, in_ch, 3, 3, generator=gen) * 0.02
        state[f"{prefix}.bias"] = torch.zeros(out_ch)

    conv("model.0", nf, 3)
    for b in range(blocks):
        for rdb in (1, 2, 3):
            for c in range(1, 6):
                conv(f"model.1.sub.{b}.RDB{rdb}.conv{c}.0", nf if c == 5 else gc, nf + (c - 1) * gc)
    conv(f"model.1.sub.{blocks}", nf, nf)  # trunk conv
    # One [Upsample, conv, LeakyReLU] per doubling, then the HR conv and the last conv.
    idx = 3
    for _ in range(scale.bit_length() - 1):
        conv(f"model.{idx}", nf, nf)
        idx += 3
    conv(f"model.{idx - 1}", nf, nf)
    conv(f"model.{idx + 1}", 3, nf)
    return state


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    paths = {
        "x2.safetensors": root / "esrgan_x2.safetensors",
        "x2.pth": root / "esrgan_x2.pth",
        "x4.safetensors": root / "esrgan_x4.safetensors",
    }
    save_file(esrgan_state(2), str(paths["x2.safetensors"]))
    torch.save(esrgan_state(2), paths["x2.pth"])
    save_file(esrgan_state(4), str(paths["x4.safetensors"]))
    return paths


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    clear_model_cache()


def frames(n: int = 3, h: int = 24, w: int = 40) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_resampler_doubles_size_and_keeps_uint8() -> None:
    up = Upscaler(2, device="cpu", batch=2)
    out = up(frames(5))
    assert out.shape == (5, 48, 80, 3) and out.dtype == np.uint8
    assert up.out_size(40, 24) == (80, 48)
    assert up.name == "bicubic" and up.model_scale is None


def test_resampler_keeps_flat_colour() -> None:
    flat = np.full((1, 8, 8, 3), 123, dtype=np.uint8)
    assert (Upscaler(3, device="cpu")(flat) == 123).all()


def test_factor_one_returns_input_unchanged() -> None:
    x = frames()
    assert Upscaler(1, device="cpu")(x) is x
    assert Upscaler(np.int64(2), device="cpu").factor == 2  # type: ignore[arg-type]


@pytest.mark.parametrize("factor", [0, 9, -2, 2.0, True])
def test_factor_outside_range_is_refused(factor: object) -> None:
    with pytest.raises(RequestError, match="factor"):
        Upscaler(factor, device="cpu")  # type: ignore[arg-type]


def test_wrong_frame_array_is_refused() -> None:
    with pytest.raises(RequestError, match="uint8"):
        Upscaler(2, device="cpu")(frames().astype(np.float32))
    with pytest.raises(RequestError, match="uint8"):
        Upscaler(2, device="cpu")(frames()[0])


@pytest.mark.parametrize("kind", ["x2.safetensors", "x2.pth"])
def test_esrgan_model_upscales(models: dict[str, Path], kind: str) -> None:
    up = Upscaler(2, models[kind], device="cpu", batch=2)
    assert up.model_scale == 2 and up.name == "ESRGAN 2x"
    out = up(frames())
    assert out.shape == (3, 48, 80, 3) and out.dtype == np.uint8


def test_safetensors_and_pth_give_the_same_pixels(models: dict[str, Path]) -> None:
    x = frames(1)
    a = Upscaler(2, models["x2.safetensors"], device="cpu")(x)
    b = Upscaler(2, models["x2.pth"], device="cpu")(x)
    assert np.array_equal(a, b)


def test_model_of_another_scale_is_resized_to_the_factor(models: dict[str, Path]) -> None:
    up = Upscaler(2, models["x4.safetensors"], device="cpu")
    assert up.model_scale == 4
    assert up(frames(1)).shape == (1, 48, 80, 3)


def test_tiled_matches_untiled_shape_and_roughly_pixels(models: dict[str, Path]) -> None:
    x = frames(1, 40, 72)
    whole = Upscaler(2, models["x2.safetensors"], device="cpu")(x)
    tiled = Upscaler(2, models["x2.safetensors"], device="cpu", tile=32)(x)
    assert tiled.shape == whole.shape == (1, 80, 144, 3)
    assert np.abs(tiled.astype(int) - whole.astype(int)).mean() < 2


def test_model_is_loaded_once_until_the_file_changes(models: dict[str, Path]) -> None:
    path = models["x2.safetensors"]
    first = Upscaler(2, path, device="cpu").model
    assert Upscaler(2, path, device="cpu").model is first
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert Upscaler(2, path, device="cpu").model is not first


def test_missing_model_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="nope.safetensors"):
        Upscaler(2, tmp_path / "nope.safetensors", device="cpu")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_corrupt_model_file_is_refused(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(RequestError, match="'broken.* is not a readable"):
        Upscaler(2, path, device="cpu")


def test_unknown_architecture_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"encoder.layer.0.weight": torch.zeros(4, 4)}, str(path))
    with pytest.raises(RequestError, match="architecture"):
        Upscaler(2, path, device="cpu")


def test_unsupported_file_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"x")
    with pytest.raises(RequestError, match="unsupported"):
        Upscaler(2, path, device="cpu")


class _Payload:
    """Unpickling this creates a file: stands in for code hidden in a model download."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_pickled_code_in_pth_is_refused_and_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({**esrgan_state(2), "extra": _Payload(marker)}, path)
    with pytest.raises(RequestError, match="refused"):
        Upscaler(2, path, device="cpu")
    assert not marker.exists()
    # The payload is live: an unrestricted load would have run it.
    proof = tmp_path / "proof"
    torch.save(_Payload(proof), tmp_path / "proof.pth")
    torch.load(tmp_path / "proof.pth", weights_only=False)
    assert proof.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_plain_pickle_file_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "legacy.pth"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(RequestError, match="legacy.pth"):
        Upscaler(2, path, device="cpu")
    assert not marker.exists()

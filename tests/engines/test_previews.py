"""Live previews and the ETA's parts on the real tiny Wan pipelines (CPU): size, cadence, no effect on the output."""

from __future__ import annotations

import dataclasses
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from artifex_agent.engines import previews as pv
from artifex_agent.engines.eta import CostHistory, EtaClock
from artifex_agent.engines.generation import GenerationCancelled, GenerationEngine, GenerationRequest
from tests.conftest import TINY_MODELS

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def engine(models_root: Path) -> Iterator[GenerationEngine]:
    eng = GenerationEngine(models_root, device="cpu", max_frames=33, max_batch=4)
    eng.preview_interval_s = 0.0  # every due step, however fast (the rate limit has a test of its own)
    yield eng
    eng.close()


def request(**changes: object) -> GenerationRequest:
    base = GenerationRequest(model=TINY_MODELS["t2v"], prompts=["a red cat walking"], steps=6, seed=5)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def run(engine: GenerationEngine, req: GenerationRequest, **kw: object) -> tuple[object, list[pv.Preview]]:
    got: list[pv.Preview] = []
    result = engine.generate(req, on_preview=got.append, **kw)  # type: ignore[arg-type]
    return result, got


def image_of(preview: pv.Preview) -> Image.Image:
    with Image.open(io.BytesIO(preview.data)) as img:
        assert img.format == ("WEBP" if preview.mime == "image/webp" else "JPEG")
        return img.convert("RGB")


@pytest.mark.parametrize(("model", "size"), [("t2v", (96, 64)), ("ti2v", (64, 64))])
def test_previews_decode_at_the_requested_size(engine: GenerationEngine, model: str,
                                               size: tuple[int, int]) -> None:
    # t2v: Wan2.1 VAE (16 channels); ti2v: Wan2.2 VAE (48): both through their published factors.
    _, got = run(engine, request(model=TINY_MODELS[model], width=size[0], height=size[1], preview_every=3))
    assert [p.step for p in got] == [3, 6] and all(p.total == 6 for p in got)
    for preview in got:
        image = image_of(preview)
        # 9 frames are 3 latent frames: all three on a 2x2 grid, the fourth cell black.
        assert pv.frames_shown(3) == 3 and image.size == pv.preview_size(*size, 3)
        cell_w, cell_h = pv.cell_size(*size, 3)
        assert image.size == (2 * cell_w, 2 * cell_h)
        pixels = np.asarray(image)
        assert pixels[:cell_h, :cell_w].std() > 0 and pixels[cell_h + 2:, cell_w + 2:].mean() < 8


def test_a_wide_video_gets_a_preview_at_most_256_wide() -> None:
    assert pv.preview_size(1280, 720, 4) == (256, 144)  # four 128x72 frames
    assert pv.preview_size(832, 480, 4) == (256, 148)
    assert pv.preview_size(64, 32, 1) == (64, 32)
    assert pv.preview_size(64, 32, 2) == (64, 16)
    data = pv.encode(np.zeros((4, 45, 80, 3), np.uint8), pv.cell_size(1280, 720, 4))
    with Image.open(io.BytesIO(data)) as img:
        assert img.size == (256, 144)


@pytest.mark.parametrize(("every", "steps"), [(1, [1, 2, 3, 4, 5, 6]), (2, [2, 4, 6]), (4, [4]), (0, [])])
def test_cadence_follows_preview_every(engine: GenerationEngine, every: int, steps: list[int]) -> None:
    _, got = run(engine, request(preview_every=every))
    assert [p.step for p in got] == steps


def test_previews_come_at_most_every_interval_but_the_last_step_always(engine: GenerationEngine) -> None:
    engine.preview_interval_s = 60.0
    try:
        _, got = run(engine, request(preview_every=1))
    finally:
        engine.preview_interval_s = 0.0
    assert [p.step for p in got] == [1, 6]


def test_a_job_with_previews_gives_the_same_bits_as_one_without(engine: GenerationEngine) -> None:
    plain = engine.generate(request())
    _, got = run(engine, request(preview_every=1))
    with_previews, _ = run(engine, request(preview_every=1))
    assert got and plain.frames is not None
    assert plain.frames.tobytes() == with_previews.frames.tobytes()  # type: ignore[attr-defined]
    latents = engine.generate(request(output="latent")).latents
    again, _ = run(engine, request(output="latent", preview_every=2))
    assert latents is not None and torch.equal(latents, again.latents)  # type: ignore[attr-defined]


def test_previews_of_a_cancelled_job_stop(engine: GenerationEngine) -> None:
    cancel = threading.Event()
    got: list[pv.Preview] = []

    def on_step(step: int, total: int) -> None:
        if step == 3:
            cancel.set()

    with pytest.raises(GenerationCancelled):
        engine.generate(request(preview_every=1), on_step=on_step, cancel=cancel, on_preview=got.append)
    sent = len(got)
    time.sleep(0.3)
    assert len(got) == sent and all(p.step < 3 for p in got)


def test_known_latent_widths_use_their_factors_and_others_a_generic_projection() -> None:
    # All-zero latents show each format's bias colour; the generic projection stretches channels.
    wan21 = pv.project(torch.zeros(1, 16, 5, 2, 2), frames=4)
    assert wan21.shape == (4, 2, 2, 3)
    expected = [round((b + 1) / 2 * 255) for b in pv.FACTORS[16][1]]
    assert wan21[0, 0, 0].tolist() == expected
    assert pv.project(torch.zeros(1, 48, 1, 2, 2))[0, 0, 0].tolist() == [
        round((b + 1) / 2 * 255) for b in pv.FACTORS[48][1]]
    odd = torch.arange(1 * 5 * 2 * 2 * 2, dtype=torch.float32).reshape(1, 5, 2, 2, 2)
    generic = pv.project(odd, frames=2)
    assert generic.shape == (2, 2, 2, 3) and generic.min() == 0 and generic.max() == 255


def test_eta_clock_counts_remaining_steps_at_the_measured_pace_plus_the_tail() -> None:
    now = [10.0]
    clock = EtaClock(after_s=3.0, clock=lambda: now[0])
    assert clock.step(1, 10) == 0.0  # one mark: no pace yet
    now[0] += 2.0
    assert clock.step(2, 10) == pytest.approx(8 * 2.0 + 3.0)
    now[0] += 4.0
    assert clock.step(3, 10) == pytest.approx(7 * 3.0 + 3.0)


def test_cost_history_takes_the_median_of_a_size_or_scales_the_nearest() -> None:
    costs = CostHistory(keep=3)
    assert costs.predict("decode", 64, 64, 9) is None
    for s in (9.0, 1.0, 2.0, 3.0):  # the oldest falls out
        costs.record("decode", 64, 64, 9, s)
    assert costs.predict("decode", 64, 64, 9) == 2.0
    assert costs.predict("decode", 128, 64, 9) == pytest.approx(4.0)
    assert costs.predict("upscale", 64, 64, 9) is None


def test_the_engine_records_its_decode_cost_by_size(engine: GenerationEngine) -> None:
    engine.generate(request(width=48, height=32, steps=2))
    cost = engine.costs.predict("decode", 48, 32, 9)
    assert cost is not None and 0 < cost < 10


def test_an_estimate_on_the_gpu_is_copied_to_pinned_memory_without_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    # No GPU here: the CUDA branch of Previews.capture with torch's calls faked, checking what they receive.
    frames = np.full((2, 8, 8, 3), 200, np.uint8)
    calls: list[tuple] = []

    class OnGpu:
        is_cuda = True
        shape = frames.shape
        dtype = torch.uint8

    class Pinned:
        def __len__(self) -> int:
            return len(frames)

        def copy_(self, src: object, non_blocking: bool = False) -> None:
            calls.append(("copy_", type(src).__name__, non_blocking))

        def numpy(self) -> np.ndarray:
            calls.append(("numpy",))
            return frames

    class Event:
        def record(self) -> None:
            calls.append(("record",))

        def synchronize(self) -> None:
            calls.append(("synchronize",))

    def empty(shape: tuple, dtype: torch.dtype, pin_memory: bool) -> Pinned:
        calls.append(("empty", tuple(shape), dtype, pin_memory))
        return Pinned()

    monkeypatch.setattr(pv, "project", lambda estimate, count: OnGpu())
    monkeypatch.setattr(pv.torch, "empty", empty)
    monkeypatch.setattr(pv.torch.cuda, "Event", Event)
    got: list[pv.Preview] = []
    previews = pv.Previews(1, 8, 8, got.append)
    previews.capture(1, 1, torch.zeros(1), last=True)
    previews.close()
    # Pinned host memory, a copy that does not wait, an event recorded; the encoding thread waits on it first.
    assert calls[:3] == [("empty", frames.shape, torch.uint8, True), ("copy_", "OnGpu", True), ("record",)]
    assert calls[3:] == [("synchronize",), ("numpy",)]
    assert len(got) == 1 and Image.open(io.BytesIO(got[0].data)).size[0] > 0

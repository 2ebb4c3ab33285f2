"""The step-wise loop and the hand-off in one process, against GenerationEngine.generate (the pipeline itself)."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from artifex_agent import PROTOCOL_VERSION
from artifex_agent.engines.generation import GenerationEngine, GenerationRequest
from artifex_agent.errors import RequestError, StreamError
from artifex_agent.local_cluster import DEMO_MODEL
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.proto.artifex.v1 import split_pb2 as spb
from artifex_agent.split import handoff, messages
from artifex_agent.split.denoise import Denoiser, DenoiseState
from artifex_agent.split.handoff import PeerMismatch

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def engine(a14b_root: Path) -> Iterator[GenerationEngine]:
    eng = GenerationEngine(a14b_root, device="cpu")
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def fingerprint(a14b_root: Path) -> str:
    return handoff.model_fingerprint(a14b_root / DEMO_MODEL)


def job(**changes: object) -> GenerationRequest:
    base = GenerationRequest(model=DEMO_MODEL, prompts=["a red cat walking"], width=32, height=32, num_frames=5,
                             steps=6, guidance_scale=3.0, guidance_scale_2=2.0, seed=7, output="latent")
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def wire_request(req: GenerationRequest) -> pb.GenerateRequest:
    return pb.GenerateRequest(model=req.model, task=pb.TASK_T2V, prompts=req.prompts, width=req.width,
                              height=req.height, num_frames=req.num_frames, steps=req.steps,
                              guidance_scale=req.guidance_scale, guidance_scale_2=req.guidance_scale_2 or 0.0,
                              seed=req.seed, output=pb.PAYLOAD_KIND_LATENT)


def reference(engine: GenerationEngine, req: GenerationRequest) -> torch.Tensor:
    """One uninterrupted pipeline call."""
    latents = engine.generate(req).latents
    assert latents is not None
    return latents


def first_half(engine: GenerationEngine, req: GenerationRequest, stop: int,
               fingerprint: str) -> tuple[spb.HandoffHeader, list[bytes]]:
    """Steps [0, stop) and the hand-off's DenoiseEvent messages."""
    with engine.exclusive(req.model) as pipe:
        d = Denoiser(pipe, req)
        state = d.run(d.start(), stop)
        header, tensors = handoff.build_header(d.snapshot(state), d, wire_request(req), fingerprint)
        return header, list(handoff.encode(header, tensors, chunk_bytes=4096))


def receive(raw: list[bytes], req: GenerationRequest, fingerprint: str) -> handoff.Handoff:
    rx = handoff.HandoffReceiver(request=wire_request(req), fingerprint=fingerprint)
    for message in raw:
        m = messages.decode(message, spb.DenoiseEvent)
        getattr(rx, f"on_{'header' if m.kind == 'handoff' else m.kind}")(m.value)
    return rx.finish()


def second_half(engine: GenerationEngine, req: GenerationRequest, got: handoff.Handoff) -> torch.Tensor:
    with engine.exclusive(req.model) as pipe:
        d = Denoiser(pipe, req)
        handoff.verify(got, d)
        return d.run(d.restore(got.state), d.total).latents


@pytest.mark.parametrize("changes", [
    {},
    {"guidance_scale": 1.0, "guidance_scale_2": None, "steps": 5},
    {"guidance_scale": 4.0, "guidance_scale_2": None, "seed": 3, "steps": 4},
    {"prompts": ["a cat", "a blue bird flying"], "negative_prompt": "blurry", "steps": 3},
    {"num_frames": 9, "width": 48, "height": 32, "steps": 8, "seed": 11},
])
def test_the_step_wise_loop_is_the_pipeline_bit_for_bit(engine: GenerationEngine, changes: dict) -> None:
    req = job(**changes)
    with engine.exclusive(req.model) as pipe:
        d = Denoiser(pipe, req)
        latents = d.run(d.start(), d.total).latents
    assert torch.equal(latents, reference(engine, req))


def test_a_handoff_after_any_step_resumes_bit_for_bit(engine: GenerationEngine, fingerprint: str) -> None:
    req = job()
    ref = reference(engine, req)
    for stop in range(req.steps + 1):
        header, raw = first_half(engine, req, stop, fingerprint)
        assert header.next_step == stop and raw[-1][0] == 0x22
        got = receive(raw, req, fingerprint)
        assert torch.equal(second_half(engine, req, got), ref), f"hand-off after step {stop}"


def test_without_the_scheduler_state_the_same_handoff_drifts(engine: GenerationEngine, fingerprint: str) -> None:
    # The check above can fail: drop UniPC's memory (keep only its step counter) and the end differs.
    req = job()
    ref = reference(engine, req)
    for stop in (1, 3):
        got = receive(first_half(engine, req, stop, fingerprint)[1], req, fingerprint)
        with engine.exclusive(req.model) as pipe:
            d = Denoiser(pipe, req)
            d.scheduler._step_index = stop
            state = DenoiseState(stop, got.state.latents, got.state.prompt_embeds, got.state.negative_prompt_embeds)
            drifted = d.run(state, d.total).latents
        assert not torch.equal(drifted, ref)
        assert (drifted - ref).abs().max() > 1e-3


def test_the_expert_boundary_is_where_the_pipeline_switches(engine: GenerationEngine) -> None:
    req = job(steps=6)
    with engine.exclusive(req.model) as pipe:
        d = Denoiser(pipe, req)
        boundary = d.boundary_step()
        experts = [d.expert(i)[0] for i in range(d.total)]
    assert 0 < boundary < 6
    assert all(e is pipe.transformer for e in experts[:boundary])
    assert all(e is pipe.transformer_2 for e in experts[boundary:])


def test_a_corrupted_or_truncated_handoff_is_refused(engine: GenerationEngine, fingerprint: str) -> None:
    req = job()
    _, raw = first_half(engine, req, 2, fingerprint)
    corrupted = list(raw)
    chunk = bytearray(corrupted[2])
    chunk[-1] ^= 0xFF
    corrupted[2] = bytes(chunk)
    with pytest.raises(StreamError, match="checksum"):
        receive(corrupted, req, fingerprint)
    with pytest.raises(StreamError, match="truncated"):
        receive(raw[:-1], req, fingerprint)
    with pytest.raises(StreamError, match="ended after"):
        receive(raw[:3] + raw[-1:], req, fingerprint)


def test_a_handoff_from_another_version_or_model_is_refused(engine: GenerationEngine, fingerprint: str) -> None:
    req = job()
    header, raw = first_half(engine, req, 2, fingerprint)
    for field, value, words in [("protocol_version", PROTOCOL_VERSION + 1, f"protocol {PROTOCOL_VERSION + 1}"),
                                ("format_version", 99, "format 99"),
                                ("model_fingerprint", "0" * 64, "differs between the two agents"),
                                ("model", "wan2.2-other", "is for model 'wan2.2-other'")]:
        bad = spb.HandoffHeader()
        bad.CopyFrom(header)
        setattr(bad, field, value)
        with pytest.raises(PeerMismatch, match=words):
            receive([messages.denoise_event(handoff=bad), *raw[1:]], req, fingerprint)
    with pytest.raises(RequestError, match="different job"):
        receive(raw, job(seed=8), fingerprint)


def test_verify_refuses_another_scheduler_dtype_or_shape(engine: GenerationEngine, fingerprint: str) -> None:
    req = job()
    header, raw = first_half(engine, req, 2, fingerprint)
    cases = [
        (lambda h: setattr(h.scheduler, "config_sha256", "1" * 64), PeerMismatch, "scheduler"),
        (lambda h: setattr(h.scheduler, "schedule_sha256", "2" * 64), PeerMismatch, "timesteps or sigmas"),
        (lambda h: setattr(h, "compute_dtype", "bfloat16"), PeerMismatch, "computes in bfloat16"),
        (lambda h: setattr(h.scheduler, "step_index", 1), RequestError, "scheduler is at step 1"),
    ]
    for change, error, words in cases:
        got = receive(raw, req, fingerprint)
        change(got.header)
        got.state.scheduler.step_index = got.header.scheduler.step_index  # type: ignore[union-attr]
        with engine.exclusive(req.model) as pipe, pytest.raises(error, match=words):
            handoff.verify(got, Denoiser(pipe, req))
    got = receive(raw, req, fingerprint)
    got.state.latents = got.state.latents[:, :, :1]
    with engine.exclusive(req.model) as pipe, pytest.raises(RequestError, match="tensor latents is float32"):
        handoff.verify(got, Denoiser(pipe, req))


def test_the_fingerprint_tells_other_weights_apart(a14b_root: Path, odd_model: Path, tmp_path: Path,
                                                   fingerprint: str) -> None:
    same = shutil.copytree(a14b_root / DEMO_MODEL, tmp_path / "copy" / DEMO_MODEL)
    assert handoff.model_fingerprint(same) == fingerprint
    assert handoff.model_fingerprint(odd_model) != fingerprint


def test_tensors_keep_their_bytes_in_any_dtype() -> None:
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        t = torch.randn(2, 3, 5).to(dtype)
        back = messages.tensor_from(messages.tensor_bytes(t).tobytes(), messages.dtype_name(dtype), (2, 3, 5))
        assert back.dtype == dtype and torch.equal(back, t)
    with pytest.raises(StreamError, match="needs 24 bytes"):
        messages.tensor_from(b"\0" * 20, "float32", (2, 3))

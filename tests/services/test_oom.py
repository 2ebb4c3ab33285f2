"""A CUDA out-of-memory mid-job answers RESOURCE_EXHAUSTED with advice, memory goes back, the agent serves on.

Whole generations and split jobs go through the same handler (engines/oom.py). The OOM is
real torch's: the transformer's forward raises torch.cuda.OutOfMemoryError as a full card
does, inside a real pipeline run on the tiny checkpoint, behind a real gRPC server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
from diffusers import WanTransformer3DModel

from artifex_agent.config import AgentConfig
from artifex_agent.engines import oom
from artifex_agent.engines.generation import GenerationEngine
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.proto.artifex.v1 import split_pb2 as spb
from artifex_agent.services.activity import Activity
from artifex_agent.services.generate import GenerateService
from artifex_agent.services.split import SplitService
from artifex_agent.split import messages
from artifex_agent.transport.channel import open_channel
from artifex_agent.transport.methods import DENOISE, GENERATE
from tests.conftest import TINY_MODELS
from tests.services.conftest import serving

MODEL = TINY_MODELS["t2v"]


@pytest.fixture(scope="module")
def engine(models_root: Path) -> Iterator[GenerationEngine]:
    torch.set_num_threads(1)
    eng = GenerationEngine(models_root, device="cpu", max_frames=33, max_batch=4)
    yield eng
    eng.close()


@pytest.fixture
def released(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Calls of the OOM handler's release_memory (the real one still runs)."""
    calls: list[int] = []
    real = oom.release_memory

    def release() -> None:
        calls.append(1)
        real()

    monkeypatch.setattr(oom, "release_memory", release)
    return calls


@contextlib.contextmanager
def full_card() -> Iterator[None]:
    """Every transformer forward runs out of GPU memory inside the block."""
    def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 23.69 GiB total)")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(WanTransformer3DModel, "forward", forward)
        yield


def _request() -> pb.GenerateRequest:
    return pb.GenerateRequest(model=MODEL, task=pb.TASK_T2V, prompts=["a red fox"], width=64, height=64, num_frames=9,
                              steps=3, guidance_scale=3.0, seed=1)


async def _generate(service: GenerateService) -> list[bytes]:
    async with serving(GENERATE, service.Generate) as address, open_channel(address) as ch:
        return [raw async for raw in GENERATE.multicallable(ch)(_request(), timeout=120)]


async def _denoise(service: SplitService) -> list[bytes]:
    async def requests() -> AsyncIterator[bytes]:
        yield messages.denoise_request(spec=spb.DenoiseSpec(request=_request()))

    async with serving(DENOISE, service.Denoise) as address, open_channel(address) as ch:
        return [raw async for raw in DENOISE.multicallable(ch)(requests(), timeout=120)]


def _refused(call: Any) -> grpc.aio.AioRpcError:
    with full_card(), pytest.raises(grpc.aio.AioRpcError) as info:
        asyncio.run(call)
    return info.value


def test_generate_out_of_memory_is_resource_exhausted_and_the_agent_serves_on(
        engine: GenerationEngine, released: list[int]) -> None:
    service = GenerateService(engine, AgentConfig(), Activity())
    exc = _refused(_generate(service))
    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert exc.details() == ("out of GPU memory generating 1 clip(s) of 9 frames at 64x64; try fewer frames, "
                             "a smaller size, vae_tiling = true")
    assert released == [1]
    assert service.admission.streams == 0 and service.admission.held == 0
    # The card has room again: the same agent runs the job to its end.
    out = asyncio.run(_generate(service))
    assert out[-1][:1] == b"\x22"  # the trailer (field 4): the whole clip went out
    assert released == [1]


def test_split_out_of_memory_is_resource_exhausted_through_the_same_handler(
        engine: GenerationEngine, released: list[int]) -> None:
    service = SplitService(engine, AgentConfig(), Activity())
    exc = _refused(_denoise(service))
    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert exc.details() == 'out of GPU memory in a split job; try fewer frames, a smaller size or offload = "auto"'
    assert released == [1]
    assert service.admission.streams == 0
    # And on: the whole job through Denoise, its output as a Generate stream would send it.
    out = asyncio.run(_denoise(service))
    assert out[-1][:1] == b"\x22"

"""Refusals that meet a client still writing arrive as what they are, on every streaming RPC that can refuse.

Each case is the race itself: the agent reads the first message and refuses while the
client keeps writing megabytes without waiting to be accepted (HTTP/2 flow control holds
a write in flight when the status comes). grpc aio then often reports INTERNAL "Internal
error from Core" instead of the agent's status (grpc/grpc#36066); the typed ErrorStatus
event the agent sends first must carry the real one every time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from artifex_agent.config import AgentConfig
from artifex_agent.engines.generation import GenerationEngine
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.proto.artifex.v1 import split_pb2 as spb
from artifex_agent.services.activity import Activity
from artifex_agent.services.postprocess import PostProcessService
from artifex_agent.services.split import SplitService
from artifex_agent.split import messages, streams
from artifex_agent.transport import wire
from artifex_agent.transport.channel import AgentStub, open_channel
from artifex_agent.transport.methods import CFG_PEER, DENOISE, POST_PROCESS, Rpc
from artifex_agent.transport.post_call import RemoteError, post_process
from tests.services.conftest import serving

# Calls per case: without the in-band event a case fails most tries (about 4 in 5 measured here).
TRIES = 8
_MIB = wire.encode_chunk(bytes(1 << 20))


async def _flood(first: bytes) -> AsyncIterator[bytes]:
    """`first`, then 1 MiB chunks until the call ends: a client that never waits to be accepted."""
    yield first
    while True:
        yield _MIB


async def _serve(rpc: Rpc, behaviour: Callable[..., Any],
                 scenario: Callable[[AgentStub], Any]) -> list[Any]:
    async with serving(rpc, behaviour) as address, open_channel(address) as channel:
        stub = AgentStub(channel)
        return [await scenario(stub) for _ in range(TRIES)]


def _split_service(tmp_path: Path) -> SplitService:
    cfg = AgentConfig(output_root=tmp_path / "out", models_root=tmp_path / "models", device="cpu")
    (tmp_path / "models").mkdir(exist_ok=True)
    return SplitService(GenerationEngine(cfg.models_root, device="cpu"), cfg, Activity())


async def _split_refusal(call: Any) -> tuple[RemoteError, int]:
    """Read a raw split call the way split/streams.py does: the refusal, and how many error events came."""
    inband = streams.Inband()
    errors = 0
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for raw in call:
            errors += inband.note("peer", raw)
    return inband.error("peer", err.value), errors


def test_a_denoise_refused_on_its_spec_while_the_hand_off_streams_says_why(tmp_path: Path) -> None:
    service = _split_service(tmp_path)
    spec = spb.DenoiseSpec(request=pb.GenerateRequest(model="no-such-model", prompts=["fox"]), resume=True)

    async def one(stub: AgentStub) -> tuple[RemoteError, int]:
        return await _split_refusal(streams.denoise_call(stub, _flood(messages.denoise_request(spec=spec)), 30))

    for refused, errors in asyncio.run(_serve(DENOISE, service.Denoise, one)):
        assert (refused.code, errors) == (grpc.StatusCode.NOT_FOUND, 1), refused
        assert "no-such-model" in refused.details
        assert not isinstance(refused, streams.AgentLost)  # a refusal: no failover, no retry


def test_a_cfg_half_refused_on_its_spec_while_predictions_stream_says_why(tmp_path: Path) -> None:
    service = _split_service(tmp_path)
    spec = spb.CfgSpec(request=pb.GenerateRequest(model="m", prompts=["fox"], guidance_scale=1.0),
                       role=spb.CFG_ROLE_COND)

    async def one(stub: AgentStub) -> tuple[RemoteError, int]:
        return await _split_refusal(streams.cfg_call(stub, _flood(messages.cfg_request(spec=spec)), 30))

    for refused, errors in asyncio.run(_serve(CFG_PEER, service.CfgPeer, one)):
        assert (refused.code, errors) == (grpc.StatusCode.INVALID_ARGUMENT, 1), refused
        assert "CFG-parallel needs guidance > 1" in refused.details


def test_a_post_process_refused_on_its_spec_while_frames_stream_says_why(tmp_path: Path) -> None:
    cfg = AgentConfig(output_root=tmp_path / "out", models_root=tmp_path / "models", device="cpu")
    service = PostProcessService(cfg, Activity())
    spec = pb.PostSpec(output_name="x/clip", upscale=2, upscale_model="nope.safetensors", encode=True)

    async def raw(stub: AgentStub) -> list[pb.PostProcessEvent]:
        # A raw client: the spec, then chunks without waiting for the agent to accept.
        events = []
        with contextlib.suppress(grpc.aio.AioRpcError):
            async for event in stub.post_process(_flood(wire.encode_spec(spec)), timeout=30):
                events.append(event)
        return events

    for events in asyncio.run(_serve(POST_PROCESS, service.PostProcess, raw)):
        assert [e.WhichOneof("event") for e in events] == ["error"]
        assert events[0].error.code == grpc.StatusCode.NOT_FOUND.value[0]

    async def helper(stub: AgentStub) -> RemoteError:
        # The client every caller uses: it holds the flood back, and reports the agent's status.
        with pytest.raises(RemoteError) as err:
            await post_process(stub, "post", spec, _flood(wire.encode_header(pb.StreamHeader())), timeout=30)
        return err.value

    for refused in asyncio.run(_serve(POST_PROCESS, service.PostProcess, helper)):
        assert refused.code == grpc.StatusCode.NOT_FOUND and "nope.safetensors" in refused.details

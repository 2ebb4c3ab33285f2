"""The client side of PostProcess: chunks wait for the agent to accept, refusals arrive as what they are."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import grpc
import numpy as np
import pytest

from artifex_agent.config import AgentConfig
from artifex_agent.errors import StreamError
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.services.activity import Activity
from artifex_agent.services.postprocess import PostProcessService
from artifex_agent.transport import frames, wire
from artifex_agent.transport.channel import AgentStub, open_channel
from artifex_agent.transport.methods import POST_PROCESS
from artifex_agent.transport.post_call import RemoteError, post_process, status_code
from tests.services.conftest import serving

T = TypeVar("T")


def _messages(n: int = 3, w: int = 16, h: int = 16, *, trailer: bool = True) -> list[bytes]:
    sender = frames.FrameSender(frames.rgb_header(w, h, n, 8.0))
    out = [sender.header_message()]
    for i in range(n):
        out += list(sender.frame_messages(np.full((h, w, 3), i, np.uint8)))
    if trailer:
        out.append(sender.trailer_message())
    return out


async def _each(messages: list[bytes], fail: BaseException | None = None) -> AsyncIterator[bytes]:
    for m in messages:
        yield m
    if fail is not None:
        raise fail


def _with_agent(tmp_path: Path, scenario: Callable[[AgentStub], Awaitable[T]]) -> T:
    """Run `scenario` against an in-process PostProcess service on loopback."""
    async def main() -> T:
        cfg = AgentConfig(output_root=tmp_path / "out", models_root=tmp_path / "models", device="cpu")
        service = PostProcessService(cfg, Activity())
        async with serving(POST_PROCESS, service.PostProcess) as address:
            async with open_channel(address) as channel:
                return await scenario(AgentStub(channel))
    return asyncio.run(main())


def test_frames_reach_the_agent_after_it_accepts_the_header(tmp_path: Path) -> None:
    stages: list[int] = []
    spec = pb.PostSpec(output_name="ok/clip", encode=True)
    result = _with_agent(tmp_path, lambda stub: post_process(
        stub, "post", spec, _each(_messages()), on_progress=lambda _, p: stages.append(p.current_stage), timeout=30))
    assert result.frames == 3 and Path(result.output_paths[0]).is_file()
    assert stages[0] == pb.STAGE_RECEIVE


def test_a_refusal_arrives_as_an_error_event_before_the_status(tmp_path: Path) -> None:
    spec = pb.PostSpec(output_name="x/clip", upscale=2, upscale_model="nope.safetensors", encode=True)

    async def raw(stub: AgentStub) -> tuple[list[pb.PostProcessEvent], grpc.StatusCode]:
        events = []
        call = stub.post_process(_each([wire.encode_spec(spec)]), timeout=30)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for event in call:
                events.append(event)
        return events, err.value.code()

    events, code = _with_agent(tmp_path, raw)
    assert code == grpc.StatusCode.NOT_FOUND
    assert [e.WhichOneof("event") for e in events] == ["error"]
    assert status_code(events[0].error.code) == grpc.StatusCode.NOT_FOUND
    assert "nope.safetensors" in events[0].error.message


def test_refusals_while_frames_wait_are_never_internal(tmp_path: Path) -> None:
    # Refused on the spec (frames queued behind it) and on the header (frames held back): the
    # race that used to answer INTERNAL "Internal error from Core" now and then.
    missing = pb.PostSpec(output_name="x/clip", upscale=2, upscale_model="nope.safetensors", encode=True)
    clip = _messages(w=16, h=16)
    bad_header = frames.rgb_header(16, 16, 3, 8.0)
    bad_header.kind = pb.PAYLOAD_KIND_UNSPECIFIED
    bad = [wire.encode_header(bad_header), *clip[1:]]

    async def scenario(stub: AgentStub) -> list[grpc.StatusCode]:
        codes = []
        for spec, messages in [(missing, clip), (pb.PostSpec(output_name="y/clip", encode=True), bad)] * 10:
            with pytest.raises(RemoteError) as err:
                await post_process(stub, "post", spec, _each(messages), timeout=30)
            codes.append(err.value.code)
        return codes

    codes = _with_agent(tmp_path, scenario)
    assert set(codes[::2]) == {grpc.StatusCode.NOT_FOUND}
    assert set(codes[1::2]) == {grpc.StatusCode.DATA_LOSS}  # the header breaks the stream contract
    assert not list((tmp_path / "out").rglob("*.mp4"))


def test_an_upstream_failure_wins_and_nothing_is_kept(tmp_path: Path) -> None:
    spec = pb.PostSpec(output_name="cut/clip", encode=True)
    with pytest.raises(StreamError, match="upstream broke"):
        _with_agent(tmp_path, lambda stub: post_process(
            stub, "post", spec, _each(_messages(trailer=False), StreamError("upstream broke")), timeout=30))
    assert not list((tmp_path / "out").rglob("*.mp4")) and not list((tmp_path / "out").rglob("*.part"))

"""The agent-wide stream budget: slots, bytes, idle and total deadlines, a client that stops reading."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from artifex_agent.config import AgentConfig
from artifex_agent.engines.generation import GenerationResult
from artifex_agent.errors import DeadlineError, ResourceError
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.services.activity import Activity
from artifex_agent.services.admission import WAITING_FACTOR, Admission, Limits
from artifex_agent.services.generate import GenerateService
from artifex_agent.transport.channel import AgentStub, open_channel
from artifex_agent.transport.methods import GENERATE
from tests.services.conftest import serving

MiB = 1 << 20


def _admission(**kw: Any) -> Admission:
    limits = dict(max_streams=2, memory_bytes=10 * MiB, idle_s=0.2, deadline_s=0.5)
    limits.update(kw)
    return Admission(Limits(**limits))


def test_working_streams_past_the_limit_are_refused_and_slots_come_back() -> None:
    admission = _admission()
    with admission.stream("a") as a, admission.stream("b") as b, admission.stream("c") as c:
        a.begin()
        b.begin()
        b.begin()  # once is enough
        with pytest.raises(ResourceError, match="limit of 2 concurrent streams"):
            c.begin()
        assert (admission.streams, admission.working) == (3, 2)
    with admission.stream("d") as d:
        d.begin()
        assert (admission.streams, admission.working) == (1, 1)
    assert (admission.streams, admission.working) == (0, 0)


def test_waiting_streams_are_bounded_too() -> None:
    admission = _admission()
    with contextlib.ExitStack() as stack:
        for i in range(WAITING_FACTOR * 2):
            stack.enter_context(admission.stream(str(i)))
        with pytest.raises(ResourceError, match="8 streams open"):
            stack.enter_context(admission.stream("one more"))


def test_bytes_are_charged_as_held_and_given_back_when_the_stream_ends() -> None:
    admission = _admission()
    with admission.stream("a") as one:
        one.hold(6 * MiB)
        with admission.stream("b") as two:
            with pytest.raises(ResourceError, match="6 of 10 MiB held by 2 open streams"):
                two.hold(5 * MiB)
            two.hold(4 * MiB)
        assert admission.held == 6 * MiB  # b's bytes went with it
        one.release(100 * MiB)  # never below zero
        assert admission.held == 0 and one.held == 0
        one.hold(3 * MiB)
        with pytest.raises(ResourceError, match=r"needs 11 MiB at once, more than all .* \(10 MiB"):
            one.hold(11 * MiB)
    assert admission.held == 0


def _never() -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        await asyncio.sleep(3600)
        yield b""
    return gen()


def test_a_client_silent_past_the_idle_timeout_is_ended() -> None:
    async def scenario() -> float:
        with _admission().stream("a") as ticket:
            start = time.monotonic()
            with pytest.raises(DeadlineError, match="no message from the client for 0.2s while waiting for frames"):
                await ticket.read(_never(), "frames")
            return time.monotonic() - start

    assert 0.15 < asyncio.run(scenario()) < 0.45


def test_without_idle_only_the_stream_deadline_bounds_the_wait() -> None:
    async def scenario() -> float:
        with _admission().stream("a") as ticket:
            start = time.monotonic()
            with pytest.raises(DeadlineError, match="past its deadline of 0.5s"):
                await ticket.read(_never(), "the header", idle=False)
            return time.monotonic() - start

    assert 0.4 < asyncio.run(scenario()) < 0.8


def test_messages_flow_through_and_the_end_is_the_end() -> None:
    async def scenario() -> list[bytes]:
        async def three() -> AsyncIterator[bytes]:
            for m in (b"a", b"b", b"c"):
                yield m

        with _admission().stream("a") as ticket:
            return [m async for m in ticket.messages(three(), "frames")]

    assert asyncio.run(scenario()) == [b"a", b"b", b"c"]


class ReadyClip:
    """An engine whose clip is ready at once: 40 frames of 720p (110 MB), more than any flow-control window."""

    def validate(self, req: Any) -> None:
        pass

    def generate(self, req: Any, on_step: Any = None, cancel: Any = None, on_preview: Any = None) -> GenerationResult:
        frames = np.broadcast_to(np.zeros((720, 1280, 3), np.uint8), (1, 40, 720, 1280, 3))
        return GenerationResult(frames=frames, latents=None, fps=16.0, model="ready", seconds=0.0)


def test_a_client_that_stops_reading_loses_its_call_and_the_agent_its_clip() -> None:
    service = GenerateService(ReadyClip(), AgentConfig(stream_idle_s=1.0), Activity())  # type: ignore[arg-type]

    async def scenario() -> tuple[int, float]:
        async with serving(GENERATE, service.Generate) as address, open_channel(address) as ch:
            call = AgentStub(ch).generate(pb.GenerateRequest(model="ready", prompts=["x"]), timeout=60)
            await call.read()  # the first progress event, then nothing more is read
            opened = service.admission.streams
            start = time.monotonic()
            while service.admission.streams and time.monotonic() - start < 10:
                await asyncio.sleep(0.1)
            call.cancel()
            return opened, time.monotonic() - start

    opened, took = asyncio.run(scenario())
    assert opened == 1 and service.admission.streams == 0 and service.admission.held == 0
    assert took < 5, f"the stalled call held its slot for {took:.1f}s"

"""run_batch's reading of a Deliver stream: one outcome per job, held frames, and the generating agent's failures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from artifex_agent.coordinator.job import Job
from artifex_agent.coordinator.pipeline import DeliveryFailed, HeldFramesGone, run_batch
from artifex_agent.coordinator.retry import classify
from artifex_agent.jobspec import JobSpec
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.transport.channel import AgentStub, open_channel
from artifex_agent.transport.methods import DELIVER
from artifex_agent.transport.post_call import RemoteError
from tests.services.conftest import serving

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]


def _jobs(n: int) -> list[Job]:
    return [Job(f"job{i}", "queued", JobSpec(prompts=[f"p{i}"]), created=time.time()) for i in range(n)]


async def _run(behaviour: Any, jobs: list[Job], **kw: Any) -> tuple[list[Any], list[pb.DeliverRequest]]:
    seen: list[pb.DeliverRequest] = []

    async def deliver(request: pb.DeliverRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.DeliverEvent]:
        seen.append(request)
        async for event in behaviour(request, context):
            yield event

    async with serving(DELIVER, deliver) as address, open_channel(address) as channel:
        results = await run_batch(AgentStub(channel), jobs, "batch1", lambda *_: None, gen_name="a",
                                  **{"post_name": "b", **kw})
    return results, seen


def test_each_job_gets_its_result_or_its_delivery_error_with_the_frames_held() -> None:
    async def behaviour(request: pb.DeliverRequest, context: Any) -> AsyncIterator[pb.DeliverEvent]:
        yield pb.DeliverEvent(result=pb.DeliveryResult(
            index=0, post_agent="b", error=pb.ErrorStatus(code=UNAVAILABLE, message="gone"), held=True))
        yield pb.DeliverEvent(result=pb.DeliveryResult(index=1, post_agent="b", result=pb.PostResult(frames=5)))

    results, seen = asyncio.run(_run(behaviour, _jobs(2)))
    assert seen[0].post_agent == "b" and [d.clips for d in seen[0].deliveries] == [1, 1]
    assert seen[0].generate.job_id == "batch1" and not seen[0].reuse_held
    failed, done = results
    assert isinstance(failed, DeliveryFailed) and failed.held and failed.gen == "a" and failed.index == 0
    assert classify(failed)[1:] == (True, "b")  # the post agent is marked down, the job retried
    assert done == pb.PostResult(frames=5)
    # The retry asks for that delivery only, from the held frames, to the agent chosen now.
    retried, seen = asyncio.run(_run(behaviour, _jobs(2)[:1], retry=failed, post_name="c"))
    assert seen[0].reuse_held and list(seen[0].only) == [0] and seen[0].post_agent == "c"
    assert seen[0].generate.job_id == "batch1"
    assert isinstance(retried[0], DeliveryFailed)  # index 0's outcome, mapped to the one job asked for


def test_held_frames_gone_means_generating_again() -> None:
    async def behaviour(request: pb.DeliverRequest, context: Any) -> AsyncIterator[pb.DeliverEvent]:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no longer held")
        yield pb.DeliverEvent()

    failed = DeliveryFailed("b", grpc.StatusCode.UNAVAILABLE, "gone", held=True, gen="a",
                            request=pb.DeliverRequest(deliveries=[pb.Delivery(clips=1)]), index=0)
    results, _ = asyncio.run(_run(behaviour, _jobs(1), retry=failed))
    assert isinstance(results[0], HeldFramesGone)
    assert classify(results[0])[1] is True  # retried, not failed as a refusal


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL])
def test_a_generating_agent_failure_fails_the_jobs_still_without_a_result(code: grpc.StatusCode) -> None:
    async def behaviour(request: pb.DeliverRequest, context: Any) -> AsyncIterator[pb.DeliverEvent]:
        yield pb.DeliverEvent(result=pb.DeliveryResult(index=0, post_agent="b", result=pb.PostResult(frames=5)))
        await context.abort(code, "broke")

    results, _ = asyncio.run(_run(behaviour, _jobs(2)))
    assert results[0] == pb.PostResult(frames=5)
    assert isinstance(results[1], RemoteError) and (results[1].agent, results[1].code) == ("a", code)

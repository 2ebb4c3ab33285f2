"""A split job through Deliver: the output agent drives its peer itself, nothing passes through the caller.

The agent that gets the Deliver runs its own half in process (split/local.py) and the other
half on the peer its cluster file names; the frames are post-processed where the Deliver
says. Compared (the sha256 of the MP4 each writes) with the same job on one
agent through an unsplit Deliver.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from artifex_agent.local_cluster import LocalCluster
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from tests.processes import deliver_events
from tests.split.conftest import ODD, TOKEN
from tests.split.test_agents import LATENT, RGB, request


def deliver_request(cluster: LocalCluster, name: str, *, split: pb.SplitPlan | None = None, post_agent: str = "",
                    **kw: Any) -> pb.DeliverRequest:
    gen = request(cluster, output=kw.pop("output", RGB), job_id=name, **kw)
    spec = pb.PostSpec(output_name=f"split-deliver/{name}", upscale=1, video_codec=pb.CODEC_H264, crf=18,
                       encoder_choice=pb.ENCODER_CHOICE_SOFTWARE, encode=True, job_id=name)
    return pb.DeliverRequest(generate=gen, post_agent=post_agent, split=split,
                             deliveries=[pb.Delivery(spec=spec, clips=len(gen.prompts))])


def deliver(cluster: LocalCluster, to: str, req: pb.DeliverRequest,
            on_event: Callable[[pb.DeliverEvent], None] | None = None) -> list[pb.DeliverEvent]:
    return asyncio.run(deliver_events(cluster.address(to), TOKEN, req, timeout=120, on_event=on_event))


def result(events: list[pb.DeliverEvent]) -> pb.DeliveryResult:
    results = [e.result for e in events if e.WhichOneof("event") == "result"]
    assert len(results) == 1, events
    assert results[0].WhichOneof("outcome") == "result", results[0].error
    return results[0]


def progress(events: list[pb.DeliverEvent], stage: int) -> list[pb.Progress]:
    return [e.progress for e in events if e.WhichOneof("event") == "progress" and e.progress.current_stage == stage]


_refs: dict[bytes, list[bytes]] = {}


def reference(cluster: LocalCluster, **kw: Any) -> list[bytes]:
    """The sha256 of the MP4 of the job on agent 'a' alone (an unsplit Deliver, post-processed there)."""
    req = deliver_request(cluster, "ref", **kw)
    key = req.generate.SerializeToString(deterministic=True)
    if key not in _refs:
        _refs[key] = list(result(deliver(cluster, "a", req)).result.sha256)
    return _refs[key]


@pytest.mark.parametrize("mode, to, peer, post_agent, output", [
    ("experts", "b", "a", "", RGB),  # low-noise half on b, post-processed in b's process
    ("experts", "b", "a", "a", LATENT),  # b's latents decoded on a (--decode-on post)
    ("cfg", "a", "b", "b", RGB),  # conditional half on a, frames post-processed on b
])
def test_a_split_deliver_makes_the_same_video_as_one_agent(duo: LocalCluster, mode: str, to: str, peer: str,
                                                           post_agent: str, output: int) -> None:
    kw = {"seed": 21, "steps": 6, "prompts": ["a red fox running", "a blue bird flying"]}
    req = deliver_request(duo, f"{mode}-{to}-{post_agent or to}", split=pb.SplitPlan(mode=mode, peer=peer),
                          post_agent=post_agent, output=output, **kw)
    events = deliver(duo, to, req)
    got = result(events)
    assert got.post_agent == (post_agent or to)
    assert list(got.result.sha256) == reference(duo, **kw)
    assert got.result.frames == 10
    # Both halves reported, the peer's steps named as its.
    steps = progress(events, pb.STAGE_DENOISE)
    assert any(p.message.startswith(f"{peer}") for p in steps), steps
    assert not progress(events, pb.STAGE_FAILOVER)


def test_a_split_naming_no_agent_of_the_cluster_file_is_refused_before_any_work(duo: LocalCluster) -> None:
    cases = [
        (pb.SplitPlan(mode="experts", peer="zz"), {}, "no agent zz in the cluster file"),
        (pb.SplitPlan(mode="experts", peer="b"), {}, "names another agent"),
        (pb.SplitPlan(mode="sideways", peer="a"), {}, "is not experts or cfg"),
        (pb.SplitPlan(mode="cfg", peer="a"), {"guidance_scale": 1.0}, "CFG-parallel needs guidance > 1"),
    ]
    for plan, kw, message in cases:
        events: list[pb.DeliverEvent] = []
        with pytest.raises(grpc.aio.AioRpcError) as err:
            deliver(duo, "b", deliver_request(duo, "refused", split=plan, **kw), events.append)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
        assert message in (err.value.details() or "")
        assert not events  # refused before any progress: nothing ran


def test_a_peer_refusal_comes_back_with_its_status_and_name(duo: LocalCluster) -> None:
    # ODD holds other weights on b: the peer's refusal is final, not a failover.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        deliver(duo, "a", deliver_request(duo, "odd", model=ODD, split=pb.SplitPlan(mode="cfg", peer="b")))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"model '{ODD}' differs between the two agents" in (err.value.details() or "")


@pytest.mark.slow
def test_a_peer_killed_mid_split_leaves_the_whole_job_to_the_output_agent(duo: LocalCluster) -> None:
    # CFG halves step in lockstep: b cannot have finished when its step 3 reaches us.
    kw = {"seed": 42, "steps": 40, "guidance_scale": 4.0, "guidance_scale_2": 3.0}
    req = deliver_request(duo, "failover", split=pb.SplitPlan(mode="cfg", peer="b"), **kw)
    killed: list[int] = []

    def kill_b(event: pb.DeliverEvent) -> None:
        p = event.progress
        if not killed and p.current_stage == pb.STAGE_DENOISE and p.message.startswith("b") and p.step >= 3:
            duo.children["b"].kill()
            killed.append(p.step)

    try:
        events = deliver(duo, "a", req, kill_b)
    finally:
        if duo.children["b"].proc.poll() is not None:  # type: ignore[union-attr]
            duo.start_agent("b")
    assert killed, "b finished before it could be killed"
    failover = progress(events, pb.STAGE_FAILOVER)
    assert len(failover) == 1 and failover[0].message.startswith("b lost") and "whole job on a" in failover[0].message
    assert list(result(events).result.sha256) == reference(duo, **kw)

"""Split jobs on two real agents (separate processes, real gRPC), against one agent's uninterrupted run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch

from artifex_agent.errors import RequestError
from artifex_agent.local_cluster import LocalCluster
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.proto.artifex.v1 import split_pb2 as spb
from artifex_agent.split import messages, streams
from artifex_agent.split.client import SplitResult, cluster_stubs, run_split
from artifex_agent.transport.post_call import RemoteError
from bench.relay import generate_and_post
from tests.split.conftest import HIGH_LORA, LOW_LORA, ODD, ONE_EXPERT, ONLY_A

LATENT, RGB = pb.PAYLOAD_KIND_LATENT, pb.PAYLOAD_KIND_RGB24


def request(cluster: LocalCluster, **kw: Any) -> pb.GenerateRequest:
    fields: dict[str, Any] = dict(model=cluster.model, task=pb.TASK_T2V, prompts=["a red fox running"], width=32,
                                  height=32, num_frames=5, steps=6, guidance_scale=3.0, guidance_scale_2=2.0, seed=1,
                                  fps=16, output=LATENT)
    fields.update(kw)
    return pb.GenerateRequest(**fields)


def split(cluster: LocalCluster, req: pb.GenerateRequest, mode: str, first: str = "a", second: str = "b",
          **kw: Any) -> SplitResult:
    async def go() -> SplitResult:
        async with cluster_stubs(cluster.config) as stubs:
            return await run_split(stubs, req, mode, generate_on=first, other=second, **kw)  # type: ignore[arg-type]
    return asyncio.run(go())


_refs: dict[bytes, Any] = {}


def reference(cluster: LocalCluster, req: pb.GenerateRequest) -> Any:
    """The job on agent 'a' alone, through Generate (GenerationEngine.generate: one pipeline call)."""
    key = req.SerializeToString(deterministic=True)
    if key not in _refs:
        out = split(cluster, req, "none").output
        assert out is not None
        _refs[key] = out.latents if req.output == LATENT else out.frames
    return _refs[key]


@pytest.mark.parametrize("seed, steps, stop", [
    (1, 6, 0), (2, 4, 0), (3, 8, 0),  # at the expert boundary
    (4, 6, 1), (4, 6, 3), (5, 7, 6),  # after other steps: the state carries anywhere
])
def test_expert_split_equals_one_agent(duo: LocalCluster, seed: int, steps: int, stop: int) -> None:
    req = request(duo, seed=seed, steps=steps)
    result = split(duo, req, "experts", stop_step=stop)
    assert result.output is not None and result.output.latents is not None
    assert torch.equal(result.output.latents, reference(duo, req))
    assert result.ran_on == ("a", "b") and not result.failover
    assert 0 < result.stats.handoff_bytes


@pytest.mark.parametrize("sampling", [
    {},  # the model's scheduler
    {"scheduler": "euler", "shift": 5.0, "boundary_ratio": 0.875, "guidance_scale": 1.0, "guidance_scale_2": 1.0},
])
def test_an_expert_split_with_high_and_low_loras_equals_one_agent(duo: LocalCluster, sampling: dict[str, Any]) -> None:
    loras = [pb.LoraRef(name=HIGH_LORA, strength=1.0, expert="high"), pb.LoraRef(name=LOW_LORA, strength=0.7,
                                                                               expert="low")]
    req = request(duo, seed=6, steps=4, loras=loras, **sampling)
    result = split(duo, req, "experts")
    assert result.output is not None and result.output.latents is not None
    assert result.ran_on == ("a", "b") and not result.failover
    assert torch.equal(result.output.latents, reference(duo, req))
    # The LoRAs did something: without them the latents differ.
    assert not torch.equal(reference(duo, req), reference(duo, request(duo, seed=6, steps=4, **sampling)))


@pytest.mark.parametrize("seed, steps, guidance, guidance_2", [(1, 6, 3.0, 2.0), (2, 5, 5.0, 0.0), (3, 3, 1.5, 4.0)])
def test_cfg_parallel_equals_one_agent(duo: LocalCluster, seed: int, steps: int, guidance: float,
                                       guidance_2: float) -> None:
    req = request(duo, seed=seed, steps=steps, guidance_scale=guidance, guidance_scale_2=guidance_2)
    result = split(duo, req, "cfg")
    assert result.output is not None and result.output.latents is not None
    assert torch.equal(result.output.latents, reference(duo, req))
    # One prediction per step each way, each a header, one chunk and a trailer.
    assert result.stats.exchange_messages == 2 * steps * 3


@pytest.mark.parametrize("mode", ["experts", "cfg"])
def test_decoded_frames_and_batches_equal_one_agent(duo: LocalCluster, mode: str) -> None:
    req = request(duo, prompts=["a red fox running", "a blue bird flying"], seed=9, output=RGB)
    result = split(duo, req, mode, first="b", second="a")
    assert result.output is not None and result.output.frames is not None
    assert result.output.frames.shape == (2, 5, 32, 32, 3)
    assert np.array_equal(result.output.frames, reference(duo, req))


def test_guidance_one_is_refused_for_cfg_parallel(duo: LocalCluster) -> None:
    with pytest.raises(RequestError, match="CFG-parallel needs guidance > 1"):
        split(duo, request(duo, guidance_scale=1.0), "cfg")

    async def raw_call() -> None:
        async with cluster_stubs(duo.config) as stubs:
            spec = spb.CfgSpec(request=request(duo, guidance_scale=1.0), role=spb.CFG_ROLE_COND)
            await _events(streams.cfg_call(stubs["a"], _messages([messages.cfg_request(spec=spec)])), "a")
    with pytest.raises(RemoteError) as err:
        asyncio.run(raw_call())
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "CFG-parallel needs guidance > 1" in err.value.details


async def _messages(items: list[bytes]) -> AsyncIterator[bytes]:
    for item in items:
        yield item


async def _events(call: Any, agent: str) -> list[bytes]:
    """A raw split call's events; a refusal raises with the agent's in-band status, as split/streams.py reads it.

    These calls send everything without waiting to be accepted: the status of a refusal that
    meets them mid-write may say INTERNAL, its in-band copy never does.
    """
    inband = streams.Inband()
    out = []
    try:
        async for raw in call:
            if not inband.note(agent, raw):
                out.append(raw)
    except grpc.aio.AioRpcError as exc:
        raise inband.error(agent, exc) from None
    return out


async def _handoff(duo: LocalCluster, req: pb.GenerateRequest, stop: int) -> list[bytes]:
    """A real hand-off from agent 'a', as raw messages."""
    async with cluster_stubs(duo.config) as stubs:
        spec = spb.DenoiseSpec(request=req, handoff=True, stop_step=stop)
        call = streams.denoise_call(stubs["a"], _messages([messages.denoise_request(spec=spec)]))
        return [raw async for raw in call if raw[0] != streams.PROGRESS]


async def _resume(duo: LocalCluster, req: pb.GenerateRequest, handoff: list[bytes]) -> list[bytes]:
    async with cluster_stubs(duo.config) as stubs:
        first = messages.denoise_request(spec=spb.DenoiseSpec(request=req, resume=True))
        return await _events(streams.denoise_call(stubs["b"], _messages([first, *handoff])), "b")


def test_mismatched_or_damaged_handoffs_are_refused_by_the_agent(duo: LocalCluster) -> None:
    req = request(duo, seed=21)
    raw = asyncio.run(_handoff(duo, req, 2))
    header = spb.DenoiseEvent.FromString(raw[0]).handoff
    assert header.next_step == 2 and header.tensors[0].name == "latents"

    def with_header(**changes: Any) -> list[bytes]:
        bad = spb.HandoffHeader()
        bad.CopyFrom(header)
        for key, value in changes.items():
            setattr(bad, key, value)
        return [messages.denoise_event(handoff=bad), *raw[1:]]

    corrupted = list(raw)
    corrupted[1] = raw[1][:-1] + bytes([raw[1][-1] ^ 0x55])
    cases = [
        (with_header(protocol_version=7), req, grpc.StatusCode.FAILED_PRECONDITION, "peer speaks protocol 7"),
        (with_header(model_fingerprint="f" * 64), req, grpc.StatusCode.FAILED_PRECONDITION,
         "differs between the two agents"),
        (corrupted, req, grpc.StatusCode.DATA_LOSS, "checksum"),
        (raw[:-2], req, grpc.StatusCode.DATA_LOSS, "truncated"),
        (raw, request(duo, seed=22), grpc.StatusCode.INVALID_ARGUMENT, "different job"),
    ]
    for messages_, job, code, words in cases:
        with pytest.raises(RemoteError) as err:
            asyncio.run(_resume(duo, job, messages_))
        assert err.value.code == code, err.value.details
        assert words in err.value.details
    # The real thing still works after the refusals.
    out = asyncio.run(_resume(duo, req, raw))
    assert out and out[-1][0] == streams.TRAILER


def _sha(result: SplitResult | Any) -> list[str]:
    post = result.post if isinstance(result, SplitResult) else result.result
    assert post is not None
    return list(post.sha256)


async def _relay(duo: LocalCluster, req: pb.GenerateRequest, spec: pb.PostSpec) -> Any:
    async with cluster_stubs(duo.config) as stubs:
        return await generate_and_post(stubs["a"], stubs["b"], req, spec, gen_name="a", post_name="b")


def test_decode_on_post_gives_the_same_video_as_decoding_on_the_generating_agent(duo: LocalCluster) -> None:
    def spec(name: str) -> pb.PostSpec:
        return pb.PostSpec(output_name=f"dop/{name}", upscale=1, video_codec=pb.CODEC_H264, crf=18,
                           encoder_choice=pb.ENCODER_CHOICE_SOFTWARE, encode=True)

    frames_path = asyncio.run(_relay(duo, request(duo, seed=31, output=RGB), spec("rgb")))
    latents_path = asyncio.run(_relay(duo, request(duo, seed=31, output=LATENT), spec("latent")))
    assert latents_path.result.frames == frames_path.result.frames == 5
    assert latents_path.result.payload_bytes < frames_path.result.payload_bytes
    assert _sha(latents_path) == _sha(frames_path)
    # And through an expert split whose last stage sends latents to the post agent.
    split_post = split(duo, request(duo, seed=31, output=LATENT), "experts", post_on="b", spec=spec("split"))
    assert _sha(split_post) == _sha(frames_path)
    assert Path(split_post.post.output_paths[0]).is_file()  # type: ignore[union-attr]


def test_unknown_agents_and_one_agent_splits_are_refused(duo: LocalCluster) -> None:
    with pytest.raises(RequestError, match="two different agents"):
        split(duo, request(duo), "experts", first="a", second="a")
    with pytest.raises(RequestError, match="no agent named 'c'"):
        split(duo, request(duo), "experts", first="a", second="c")
    with pytest.raises(RemoteError) as err:
        split(duo, request(duo, model="no-such-model"), "experts")
    assert err.value.code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("mode", ["experts", "cfg"])
def test_a_peer_with_other_model_files_is_refused(duo: LocalCluster, mode: str) -> None:
    # ODD names the same folder on both agents, but agent b's holds other weights.
    with pytest.raises(RemoteError) as err:
        split(duo, request(duo, model=ODD), mode)
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert f"model '{ODD}' differs between the two agents" in err.value.details
    assert "both need the same files" in err.value.details


def test_decode_on_post_needs_the_model_on_the_post_agent(duo: LocalCluster) -> None:
    spec = pb.PostSpec(output_name="dop/missing", encode=True)
    with pytest.raises(RemoteError) as err:
        split(duo, request(duo, model=ONLY_A, output=LATENT), "none", post_on="b", spec=spec)
    assert err.value.agent == "b" and err.value.code == grpc.StatusCode.NOT_FOUND
    assert "cannot decode latents here" in err.value.details and ONLY_A in err.value.details


def test_one_expert_models_run_cfg_parallel_but_no_expert_split(duo: LocalCluster) -> None:
    req = request(duo, model=ONE_EXPERT, guidance_scale_2=0.0, seed=12)
    result = split(duo, req, "cfg")
    assert result.output is not None and torch.equal(result.output.latents, reference(duo, req))  # type: ignore[arg-type]
    with pytest.raises(RemoteError) as err:
        split(duo, req, "experts")
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "needs a two-expert model" in err.value.details

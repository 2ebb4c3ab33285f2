"""run_split: one job on two agents (expert split or CFG-parallel), failing over to a whole-job run.

Usable by `artifex-agent submit --split` (direct mode) and by the coordinator. The
output goes to a PostProcess call (post_on + spec) or is collected in memory (tests,
benchmarks). When an agent dies mid-job, whatever it had done is lost and the whole job
runs again on the surviving agent through the ordinary Generate path; the output is the
same bits either way, which the tests check.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

import grpc
import numpy as np
import torch

from artifex_agent.config import ClusterConfig
from artifex_agent.errors import RequestError
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.split import messages, streams
from artifex_agent.split.cfg import check_guidance
from artifex_agent.split.streams import AgentLost, Calls, Peer, ProgressCallback, SplitStats
from artifex_agent.transport import frames, options, post_call, wire
from artifex_agent.transport.channel import AgentStub, open_channel

logger = logging.getLogger(__name__)

Mode = Literal["none", "experts", "cfg"]
MODES: tuple[Mode, ...] = ("none", "experts", "cfg")


@dataclass
class Output:
    """A job's output collected in memory: latents (clips, C, T, h, w) or frames (clips, F, H, W, 3)."""

    header: pb.StreamHeader
    latents: torch.Tensor | None = None
    frames: np.ndarray | None = None


@dataclass
class SplitResult:
    """What ran where, what came out, and what moved between the agents."""

    mode: Mode
    ran_on: tuple[str, ...]
    output: Output | None = None
    post: pb.PostResult | None = None
    # Empty, or why the job ran whole on the surviving agent.
    failover: str = ""
    total_s: float = 0.0
    stats: SplitStats = field(default_factory=SplitStats)


@contextlib.asynccontextmanager
async def cluster_stubs(cluster: ClusterConfig) -> AsyncIterator[dict[str, AgentStub]]:
    """A stub per agent of the cluster file (one channel per address), closed on exit."""
    token = cluster.security.secrets.token
    channels: dict[str, grpc.aio.Channel] = {}
    stubs = {}
    try:
        for agent in cluster.agents:
            address = agent.dial_address
            if address not in channels:
                channels[address] = open_channel(address, cluster.security)
            stubs[agent.name] = AgentStub(channels[address], token)
        yield stubs
    finally:
        for channel in channels.values():
            await channel.close()


async def run_split(agents: Mapping[str, Peer], request: pb.GenerateRequest, mode: Mode, *,
                    generate_on: str, other: str, post_on: str | None = None, spec: pb.PostSpec | None = None,
                    on_progress: ProgressCallback | None = None, failover: bool = True, stop_step: int = 0,
                    timeout: float | None = None) -> SplitResult:
    """Run `request` split across `generate_on` and `other` (mode "none": on `generate_on` alone).

    experts: high-noise steps on generate_on, low-noise steps (and the decode) on other.
    cfg: conditional passes (and the decode) on generate_on, unconditional ones on other.
    With `post_on` and `spec` the output is post-processed there, else collected. A
    request with output=LATENT is decoded by the post agent (--decode-on post).
    """
    if mode not in MODES:
        raise RequestError(f"split mode {mode!r} is not one of {', '.join(MODES)}")
    if mode == "cfg":
        check_guidance(request.guidance_scale or 1.0)
    if mode != "none" and generate_on == other:
        raise RequestError(f"a split job needs two different agents; both are {generate_on!r}")
    for name in (generate_on, other, post_on):
        if name is not None and name not in agents:
            raise RequestError(f"no agent named {name!r} (known: {', '.join(agents)})")
    if (post_on is None) != (spec is None):
        raise RequestError("give both post_on and spec to post-process, or neither")
    stubs = dict(agents)
    started = time.monotonic()
    result = SplitResult(mode=mode, ran_on=(generate_on,) if mode == "none" else (generate_on, other))
    if on_progress is not None:
        on_progress(generate_on, pb.Progress(current_stage=pb.STAGE_SPLIT, message=describe(mode, generate_on, other)))
    calls = Calls()
    try:
        if mode == "experts":
            stream = streams.expert_stream(stubs, request, generate_on, other, calls, result.stats,
                                           on_progress=on_progress, stop_step=stop_step, timeout=timeout)
        elif mode == "cfg":
            stream = streams.cfg_stream(stubs, request, generate_on, other, calls, result.stats,
                                        on_progress=on_progress, timeout=timeout)
        else:
            stream = streams.whole_stream(_remote(stubs, generate_on), generate_on, request, calls,
                                          on_progress=on_progress, timeout=timeout)
        await _consume(result, stream, stubs, post_on, spec, on_progress, timeout)
    except AgentLost as lost:
        calls.cancel()
        survivors = [n for n in (generate_on, other) if n != lost.agent]
        if not failover or not survivors:
            raise
        survivor = survivors[0]
        result.ran_on = (survivor,)
        result.failover = f"{lost.agent} lost ({lost.code.name}: {lost.details}); ran the whole job on {survivor}"
        logger.warning("job %s: %s", request.job_id or "-", result.failover)
        if on_progress is not None:
            on_progress(survivor, pb.Progress(current_stage=pb.STAGE_FAILOVER, message=result.failover))
        post_target = survivor if post_on == lost.agent else post_on
        stream = streams.whole_stream(_remote(stubs, survivor), survivor, request, calls, on_progress=on_progress,
                                      timeout=timeout)
        await _consume(result, stream, stubs, post_target, spec, on_progress, timeout)
    finally:
        calls.cancel()
    result.total_s = time.monotonic() - started
    return result


def _remote(stubs: Mapping[str, Peer], name: str) -> AgentStub:
    """The agent's stub for Generate/PostProcess, which only remote agents are called for."""
    stub = stubs[name]
    if not isinstance(stub, AgentStub):
        raise RequestError(f"{name} takes part in process here; it cannot run the whole job or post-process for it")
    return stub


def describe(mode: Mode, first: str, second: str) -> str:
    """What runs where, for a job's events."""
    if mode == "experts":
        return f"expert split: high-noise steps on {first}, low-noise steps on {second}"
    if mode == "cfg":
        return f"CFG-parallel: conditional passes on {first}, unconditional passes on {second}"
    return f"whole job on {first}"


async def _consume(result: SplitResult, stream: AsyncIterator[bytes], stubs: dict[str, Peer],
                   post_on: str | None, spec: pb.PostSpec | None, on_progress: ProgressCallback | None,
                   timeout: float | None) -> None:
    try:
        if post_on is not None and spec is not None:
            result.post = await post_stream(_remote(stubs, post_on), post_on, spec, stream, on_progress=on_progress,
                                            timeout=timeout)
        else:
            result.output = await collect(stream)
    finally:
        with contextlib.suppress(RuntimeError):  # still running inside a cancelled gRPC request task
            await stream.aclose()  # type: ignore[attr-defined]


async def collect(stream: AsyncIterator[bytes]) -> Output:
    """Read an output stream into memory, checked against its header and trailer."""
    rx = frames.FrameReceiver(max_frames=options.MAX_FRAME_COUNT)
    parts: list[bytes] = []
    async for raw in stream:
        msg = wire.decode(raw, first_field="progress")
        if msg.kind == "header":
            assert msg.header is not None
            rx.on_header(msg.header)
        elif msg.kind == "chunk":
            assert msg.payload is not None
            parts += [bytes(view) for view in rx.on_chunk(msg.payload)]
        elif msg.kind == "trailer":
            assert msg.trailer is not None
            rx.on_trailer(msg.trailer)
    rx.finish()
    h = rx.header
    assert h is not None
    if h.kind == frames.LATENT:
        latents = torch.stack([messages.tensor_from(p, h.dtype, tuple(h.shape)) for p in parts])
        return Output(h, latents=latents)
    clips = h.clip_count or 1
    rgb = np.frombuffer(b"".join(parts), dtype=np.uint8).reshape(clips, h.frame_count // clips, h.height, h.width, 3)
    return Output(h, frames=rgb)


async def post_stream(post: AgentStub, post_name: str, spec: pb.PostSpec, stream: AsyncIterator[bytes], *,
                      on_progress: ProgressCallback | None = None, timeout: float | None = None) -> pb.PostResult:
    """Feed an output stream into PostProcess; an upstream failure ends it without a trailer, so nothing is kept."""
    # A post agent that broke (not one that refused) is lost: the job fails over.
    return await post_call.post_process(post, post_name, spec, stream, on_progress=on_progress, timeout=timeout,
                                        error=streams.agent_error)

"""Direct mode: one job on two configured agents without the coordinator, with progress bars and a summary."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

from artifex_agent.cli.progress import StageProgress
from artifex_agent.config import ClusterConfig
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.transport.channel import AgentStub, open_channel
from artifex_agent.transport.post_call import RemoteError, status_code
from artifex_agent.wire_enums import result_codec, result_encoder

if TYPE_CHECKING:
    from artifex_agent.split.client import SplitResult


@dataclass
class DirectResult:
    """What came out, and where the time went."""

    result: pb.PostResult
    total_s: float = 0.0
    stage_s: dict[str, float] = field(default_factory=dict)


async def run_direct(cluster: ClusterConfig, gen_name: str, post_name: str, request: pb.GenerateRequest,
                     spec: pb.PostSpec, progress: bool = True) -> DirectResult:
    """One job: `gen_name` generates and delivers its frames to `post_name` itself; progress bars here.

    Only progress and the result come back to this process (Deliver); RemoteError names the agent that failed.
    """
    gen_cfg = cluster.agent(gen_name)
    cluster.agent(post_name)  # a name this cluster file does not have is refused here, as the agent would
    channel = open_channel(gen_cfg.dial_address, cluster.security)
    deliver = pb.DeliverRequest(generate=request, post_agent=post_name,
                                deliveries=[pb.Delivery(spec=spec, clips=len(request.prompts) or 1)])
    start = time.monotonic()
    streamed = 0.0
    outcome: pb.DeliveryResult | None = None
    try:
        with StageProgress(enabled=progress) as bars:
            call = AgentStub(channel, cluster.security.secrets.token).deliver(deliver)
            async for event in call:
                which = event.WhichOneof("event")
                if which == "progress":
                    if event.progress.current_stage == pb.STAGE_STREAM:
                        streamed = time.monotonic()
                    bars.update("generate", event.progress)
                elif which == "post_progress":
                    bars.update("post", event.post_progress.progress)
                elif which == "result":
                    outcome = event.result
    except grpc.aio.AioRpcError as exc:
        raise RemoteError(gen_name, exc.code(), exc.details() or "") from None
    finally:
        await channel.close()
    if outcome is None:
        raise RemoteError(gen_name, grpc.StatusCode.UNKNOWN, "the Deliver stream ended without a result")
    if outcome.WhichOneof("outcome") != "result":
        raise RemoteError(outcome.post_agent, status_code(outcome.error.code), outcome.error.message)
    end = time.monotonic()
    streamed = streamed or end
    res = outcome.result
    return DirectResult(res, end - start, {"generate": streamed - start, "stream+post": end - streamed,
                                           "upscale": res.upscale_s, "encode": res.encode_s})


def print_result(r: DirectResult) -> None:
    """What a direct job produced and how long each stage took."""
    res = r.result
    for path, digest in zip(res.output_paths, res.sha256, strict=False):
        print(f"output: {path}  sha256 {digest[:16]}…")
    print(f"frames: {res.frames}  size: {res.width}x{res.height}  codec: {result_codec(res)} "
          f"({result_encoder(res)})  bytes: {res.output_bytes}")
    stages = "  ".join(f"{k} {v:.2f}s" for k, v in r.stage_s.items())
    print(f"time: total {r.total_s:.2f}s  {stages}")


def run_split(cluster: ClusterConfig, gen_name: str, post_name: str, request: pb.GenerateRequest,
              spec: pb.PostSpec, *, split: str, decode_on: str, progress: bool = True) -> int:
    """Run one job split across the two agents with progress bars and print what happened."""
    # Imported here: split/ needs torch (a second of start-up), and every CLI command imports this module
    # through `submit`, so `coordinator`, `watch` and `jobs` would pay for it on each start.
    from artifex_agent.split.direct import run_split_direct

    with StageProgress(enabled=progress) as bars:
        def on_progress(source: str, p: pb.Progress) -> None:
            # StageProgress keys the post-processing bar on source "post".
            bars.update("post" if p.current_stage in (pb.STAGE_RECEIVE, pb.STAGE_POST) else source, p)

        result = asyncio.run(run_split_direct(cluster, gen_name, post_name, request, spec, split=split,
                                              decode_on=decode_on, on_progress=on_progress))
    print_split_result(result)
    return 0


def print_split_result(r: SplitResult) -> None:
    """What a split job produced, where it ran and how long it took."""
    res: Any = r.post
    if res is not None:
        for path, digest in zip(res.output_paths, res.sha256, strict=False):
            print(f"output: {path}  sha256 {digest[:16]}…")
        print(f"frames: {res.frames}  size: {res.width}x{res.height}  codec: {result_codec(res)} "
              f"({result_encoder(res)})  bytes: {res.output_bytes}  link payload: {res.payload_bytes} bytes")
    how = {"experts": "expert split", "cfg": "CFG-parallel", "none": "whole"}[r.mode]
    print(f"split: {how} on {' + '.join(r.ran_on)}" + (f"  (failover: {r.failover})" if r.failover else ""))
    if r.stats.handoff_bytes:
        print(f"hand-off: {r.stats.handoff_bytes} bytes in {r.stats.handoff_s:.3f}s")
    if r.stats.exchange_bytes:
        print(f"predictions exchanged: {r.stats.exchange_bytes} bytes in {r.stats.exchange_messages} messages")
    print(f"time: total {r.total_s:.2f}s")

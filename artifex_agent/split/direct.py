"""`artifex-agent submit --split experts|cfg|auto --decode-on generate|post --generate-on A --post-on B`."""

from __future__ import annotations

import asyncio
from typing import Any

from artifex_agent.cli.progress import StageProgress
from artifex_agent.config import ClusterConfig
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.split.client import Mode, SplitResult, cluster_stubs, run_split
from artifex_agent.split.policy import choose_split


def resolve_mode(split: str, request: pb.GenerateRequest) -> Mode:
    """`auto` in direct mode is one job with nothing queued: CFG-parallel when there is guidance."""
    if split != "auto":
        return split  # type: ignore[return-value]
    return choose_split(two_experts=False, guidance=request.guidance_scale or 1.0, queue_depth=1, generators=2,
                        image_to_video=request.task == pb.TASK_I2V).mode


def run_split_direct(cluster: ClusterConfig, gen_name: str, post_name: str, request: pb.GenerateRequest,
                     spec: pb.PostSpec, *, split: str, decode_on: str, progress: bool = True) -> int:
    """Run one job split across the two agents (post-processed on `post_name`) and print what happened."""
    mode = resolve_mode(split, request)
    if decode_on == "post":
        # The generating agent sends latents; the post agent decodes them with the model's VAE.
        request = _with_latents(request)
    result = asyncio.run(_run(cluster, gen_name, post_name, request, spec, mode, progress))
    print_split_result(result)
    return 0


def _with_latents(request: pb.GenerateRequest) -> pb.GenerateRequest:
    copy = pb.GenerateRequest()
    copy.CopyFrom(request)
    copy.output = pb.PAYLOAD_KIND_LATENT
    return copy


async def _run(cluster: ClusterConfig, gen_name: str, post_name: str, request: pb.GenerateRequest,
               spec: pb.PostSpec, mode: Mode, progress: bool) -> SplitResult:
    async with cluster_stubs(cluster) as stubs:
        with StageProgress(enabled=progress) as bars:
            def on_progress(source: str, p: pb.Progress) -> None:
                # StageProgress keys the post-processing bar on source "post".
                bars.update("post" if p.stage in ("receive", "post") else source, p)

            return await run_split(stubs, request, mode, generate_on=gen_name, other=post_name, post_on=post_name,
                                   spec=spec, on_progress=on_progress)


def print_split_result(r: SplitResult) -> None:
    res: Any = r.post
    if res is not None:
        for path, digest in zip(res.output_paths, res.sha256, strict=False):
            print(f"output: {path}  sha256 {digest[:16]}…")
        print(f"frames: {res.frames}  size: {res.width}x{res.height}  codec: {res.codec} ({res.encoder})  "
              f"bytes: {res.output_bytes}  link payload: {res.payload_bytes} bytes")
    how = {"experts": "expert split", "cfg": "CFG-parallel", "none": "whole"}[r.mode]
    print(f"split: {how} on {' + '.join(r.ran_on)}" + (f"  (failover: {r.failover})" if r.failover else ""))
    if r.stats.handoff_bytes:
        print(f"hand-off: {r.stats.handoff_bytes} bytes in {r.stats.handoff_s:.3f}s")
    if r.stats.exchange_bytes:
        print(f"predictions exchanged: {r.stats.exchange_bytes} bytes in {r.stats.exchange_messages} messages")
    print(f"time: total {r.total_s:.2f}s")

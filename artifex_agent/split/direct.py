"""One job split across two configured agents without the coordinator (`submit --split … --generate-on A`)."""

from __future__ import annotations

from artifex_agent.config import ClusterConfig
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.split.client import Mode, SplitResult, cluster_stubs, run_split
from artifex_agent.split.policy import choose_split
from artifex_agent.split.streams import ProgressCallback


def resolve_mode(split: str, request: pb.GenerateRequest) -> Mode:
    """`auto` in direct mode is one job with nothing queued: CFG-parallel when there is guidance."""
    if split != "auto":
        return split  # type: ignore[return-value]
    return choose_split(two_experts=False, guidance=request.guidance_scale or 1.0, queue_depth=1, generators=2,
                        image_to_video=request.task == pb.TASK_I2V).mode


async def run_split_direct(cluster: ClusterConfig, gen_name: str, post_name: str, request: pb.GenerateRequest,
                           spec: pb.PostSpec, *, split: str, decode_on: str,
                           on_progress: ProgressCallback | None = None) -> SplitResult:
    """Run one job split across the two agents, post-processed on `post_name`."""
    mode = resolve_mode(split, request)
    if decode_on == "post":
        # The generating agent sends latents; the post agent decodes them with the model's VAE.
        request = _with_latents(request)
    async with cluster_stubs(cluster) as stubs:
        return await run_split(stubs, request, mode, generate_on=gen_name, other=post_name, post_on=post_name,
                               spec=spec, on_progress=on_progress)


def _with_latents(request: pb.GenerateRequest) -> pb.GenerateRequest:
    copy = pb.GenerateRequest()
    copy.CopyFrom(request)
    copy.output = pb.PAYLOAD_KIND_LATENT
    return copy

"""Direct mode: one job on two configured agents without the coordinator, with progress bars and a summary."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import grpc

from artifex_agent.cli.progress import StageProgress
from artifex_agent.config import AgentConfig, ClusterConfig
from artifex_agent.errors import RequestError
from artifex_agent.health.link import short_reason
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.transport.channel import AgentStub, open_channel
from artifex_agent.transport.diagnose import explain
from artifex_agent.transport.post_call import RemoteError, status_code
from artifex_agent.wire_enums import result_codec, result_encoder


class AgentError(RemoteError):
    """A failed call named for the user: which agent, where, what to check; not gRPC's own words."""

    def __init__(self, agent: str, code: grpc.StatusCode, details: str, message: str) -> None:
        super().__init__(agent, code, details)
        self.args = (message,)


def unreachable(agent: AgentConfig, details: str, via: str = "") -> AgentError:
    """An agent that did not answer (as the coordinator path says: where, and what to check)."""
    seen = f"agent {via!r} cannot reach it: " if via else ""
    reason = short_reason(details.splitlines()[0] if details else "unavailable")
    return AgentError(agent.name, grpc.StatusCode.UNAVAILABLE, details,
                      f"agent {agent.name!r} at {agent.dial_address} is not reachable ({seen}{reason}). Is it "
                      f"running? Start it there (artifex-agent serve --name {agent.name}, or artifex-agent up), "
                      f"check [agents.{agent.name}] in the cluster file, the link and the firewall; "
                      "artifex-agent health checks them all.")


@dataclass
class DirectResult:
    """What came out, and where the time went."""

    result: pb.PostResult
    total_s: float = 0.0
    stage_s: dict[str, float] = field(default_factory=dict)
    # A split job's peer was lost and the job ran whole on the output agent: why.
    failover: str = ""


async def run_direct(cluster: ClusterConfig, gen_name: str, post_name: str, request: pb.GenerateRequest,
                     spec: pb.PostSpec, progress: bool = True, split: pb.SplitPlan | None = None) -> DirectResult:
    """One job: `gen_name` generates (`split`: with a peer) and delivers its frames to `post_name` itself.

    Only progress and the result come back to this process (Deliver), shown as progress bars;
    RemoteError names the agent that failed.
    """
    gen_cfg = cluster.agent(gen_name)
    post_cfg = cluster.agent(post_name)  # a name this cluster file does not have is refused here, as the agent would
    channel = open_channel(gen_cfg.dial_address, cluster.security)
    deliver = pb.DeliverRequest(generate=request, post_agent=post_name, split=split,
                                deliveries=[pb.Delivery(spec=spec, clips=len(request.prompts) or 1)])
    start = time.monotonic()
    streamed = 0.0
    outcome: pb.DeliveryResult | None = None
    failover = ""
    try:
        with StageProgress(enabled=progress) as bars:
            call = AgentStub(channel, cluster.security.secrets.token).deliver(deliver)
            async for event in call:
                which = event.WhichOneof("event")
                if which == "progress":
                    if event.progress.current_stage == pb.STAGE_STREAM:
                        streamed = time.monotonic()
                    elif event.progress.current_stage == pb.STAGE_FAILOVER:
                        failover = event.progress.message
                    bars.update("generate", event.progress)
                elif which == "post_progress":
                    bars.update("post", event.post_progress.progress)
                elif which == "result":
                    outcome = event.result
            if outcome is not None and outcome.WhichOneof("outcome") == "result":
                bars.finish()
    except grpc.aio.AioRpcError as exc:
        # A TLS or token mismatch looks like a dead agent to gRPC: name it first (a refused connection costs
        # nothing here; a closed socket costs one TLS handshake).
        named = await asyncio.to_thread(explain, exc, gen_cfg.dial_address, cluster.security, f"agent {gen_name!r}")
        if named:
            raise AgentError(gen_name, exc.code(), exc.details() or "", named) from None
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            raise unreachable(gen_cfg, exc.details() or "") from None
        raise RemoteError(gen_name, exc.code(), exc.details() or "") from None
    finally:
        await channel.close()
    if outcome is None:
        raise RemoteError(gen_name, grpc.StatusCode.UNKNOWN, "the Deliver stream ended without a result")
    if outcome.WhichOneof("outcome") != "result":
        code = status_code(outcome.error.code)
        if code == grpc.StatusCode.UNAVAILABLE and outcome.post_agent == post_name:
            raise unreachable(post_cfg, outcome.error.message, via=gen_name)
        raise RemoteError(outcome.post_agent, code, outcome.error.message)
    end = time.monotonic()
    streamed = streamed or end
    res = outcome.result
    return DirectResult(res, end - start, {"generate": streamed - start, "stream+post": end - streamed,
                                           "upscale": res.upscale_s, "encode": res.encode_s}, failover)


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
    """One job split across the two agents (or its latents decoded on `post_name`): one Deliver, and what happened.

    The Deliver goes to the agent whose half makes the output (experts: the low-noise half on
    `post_name`; cfg: the conditional half on `gen_name`), which drives its peer itself
    (delivery/split.py): nothing but progress and the result comes back here.
    """
    mode = resolve_mode(split, request)
    if decode_on == "post":
        # The generating agent sends latents; the post agent decodes them with the model's VAE.
        request = _with_latents(request)
    plan, to = None, gen_name
    if mode != "none":
        if gen_name == post_name:
            raise RequestError(f"a split job needs two different agents; both are {gen_name!r}")
        peer = gen_name if mode == "experts" else post_name
        to = post_name if mode == "experts" else gen_name
        plan = pb.SplitPlan(mode=mode, peer=peer)
    result = asyncio.run(run_direct(cluster, to, post_name, request, spec, progress=progress, split=plan))
    print_result(result)
    how = {"experts": "expert split", "cfg": "CFG-parallel", "none": "whole"}[mode]
    ran_on = gen_name if mode == "none" else f"{gen_name} + {post_name}"
    print(f"split: {how} on {ran_on}" + (f"  (failover: {result.failover})" if result.failover else ""))
    return 0


def resolve_mode(split: str, request: pb.GenerateRequest) -> str:
    """`auto` in direct mode is one job with nothing queued: CFG-parallel when there is guidance."""
    if split != "auto":
        return split
    # Imported here: every CLI command imports this module through `submit`.
    from artifex_agent.split.policy import choose_split

    return choose_split(two_experts=False, guidance=request.guidance_scale or 1.0, queue_depth=1, generators=2,
                        image_to_video=request.task == pb.TASK_I2V).mode


def _with_latents(request: pb.GenerateRequest) -> pb.GenerateRequest:
    copy = pb.GenerateRequest()
    copy.CopyFrom(request)
    copy.output = pb.PAYLOAD_KIND_LATENT
    return copy

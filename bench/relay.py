"""Generate on one agent, post-process on another, with the frames passing through the caller.

No job takes this path: the coordinator and direct-mode `submit` call Deliver (split jobs too), and the
frames go from agent to agent (artifex_agent/delivery/). This client-side path stays for
`bench.stream`'s three-process comparison and for tests that drive Generate and PostProcess
separately. GenerateEvent and PostProcessRequest share the field numbers of header, chunk and
trailer, so the relay forwards those messages byte for byte and only reads progress.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc

from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.transport import wire
from artifex_agent.transport.channel import AgentStub
from artifex_agent.transport.post_call import RemoteError, post_process

__all__ = ["ProgressCallback", "RelayResult", "RemoteError", "generate_and_post"]

# (source, progress): source is "generate" or "post".
ProgressCallback = Callable[[str, pb.Progress], None]


@dataclass
class RelayResult:
    """What came out, and where the time went."""

    result: pb.PostResult
    generate_s: float = 0.0
    stream_s: float = 0.0
    total_s: float = 0.0
    frames: int = 0
    stage_s: dict[str, float] = field(default_factory=dict)


async def generate_and_post(gen: AgentStub, post: AgentStub, request: pb.GenerateRequest, spec: pb.PostSpec,
                            on_progress: ProgressCallback | None = None, *, gen_name: str = "generate agent",
                            post_name: str = "post agent", timeout: float | None = None) -> RelayResult:
    """Run one clip through both agents; raises RemoteError naming the agent that failed."""
    start = time.monotonic()
    marks: dict[str, float] = {}
    gen_call = gen.generate(request, timeout=timeout)

    async def generated() -> AsyncIterator[bytes]:
        try:
            async for raw in gen_call:
                if not wire.is_chunk(raw):  # progress, header or trailer
                    msg = wire.decode(raw, first_field="progress")
                    if msg.kind == "progress":
                        assert msg.progress is not None
                        if msg.progress.current_stage == pb.STAGE_STREAM:
                            marks["stream"] = time.monotonic()
                        if on_progress:
                            on_progress("generate", msg.progress)
                        continue
                    if msg.kind == "trailer":
                        marks["trailer"] = time.monotonic()
                yield raw
        except grpc.aio.AioRpcError as exc:
            # Raised by post_process in preference to the post agent's answer to the cut stream.
            raise RemoteError(gen_name, exc.code(), exc.details() or "") from None

    def post_progress(_agent: str, progress: pb.Progress) -> None:
        if on_progress:
            on_progress("post", progress)

    try:
        result = await post_process(post, post_name, spec, generated(), on_progress=post_progress, timeout=timeout)
    finally:
        gen_call.cancel()
    end = time.monotonic()
    stream_start = marks.get("stream", end)
    return RelayResult(
        result=result, generate_s=stream_start - start, stream_s=marks.get("trailer", end) - stream_start,
        total_s=end - start, frames=result.frames,
        stage_s={"generate": stream_start - start, "stream+post": end - stream_start,
                 "upscale": result.upscale_s, "encode": result.encode_s},
    )

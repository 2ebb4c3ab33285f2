"""Generate on one agent, post-process on another: frames pass through without parsing.

GenerateEvent and PostProcessRequest share the field numbers of header, chunk and
trailer, so the relay forwards those messages byte for byte and only reads progress.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc

from artifex_agent.errors import ArtifexError, StreamError
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.transport import wire
from artifex_agent.transport.channel import AgentStub

# (source, progress): source is "generate" or "post".
ProgressCallback = Callable[[str, pb.Progress], None]


class RemoteError(ArtifexError):
    """An agent answered a call with an error status."""

    def __init__(self, agent: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{agent}: {code.name}: {details}")
        self.agent = agent
        self.code = code
        self.details = details


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
    gen_error: list[BaseException] = []
    gen_call = gen.generate(request, timeout=timeout)

    async def requests() -> AsyncIterator[bytes]:
        yield wire.encode_spec(spec)
        try:
            async for raw in gen_call:
                if raw[:1] != b"\x1a":  # not a chunk: progress, header or trailer
                    msg = wire.decode(raw, first_field="progress")
                    if msg.kind == "progress":
                        assert msg.progress is not None
                        if msg.progress.stage == "stream":
                            marks["stream"] = time.monotonic()
                        if on_progress:
                            on_progress("generate", msg.progress)
                        continue
                    if msg.kind == "trailer":
                        marks["trailer"] = time.monotonic()
                yield raw
        except grpc.aio.AioRpcError as exc:
            # Stop without a trailer: the post agent discards what it got and writes nothing.
            gen_error.append(RemoteError(gen_name, exc.code(), exc.details() or ""))
        except (StreamError, asyncio.CancelledError) as exc:
            gen_error.append(exc)
            raise

    post_call = post.post_process(requests(), timeout=timeout)
    result: pb.PostResult | None = None
    try:
        async for event in post_call:
            if event.HasField("result"):
                result = event.result
            elif on_progress:
                on_progress("post", event.progress)
    except grpc.aio.AioRpcError as exc:
        if gen_error:
            raise gen_error[0] from None
        raise RemoteError(post_name, exc.code(), exc.details() or "") from None
    finally:
        gen_call.cancel()
    if gen_error:
        raise gen_error[0]
    if result is None:
        raise RemoteError(post_name, grpc.StatusCode.UNKNOWN, "stream ended without a result")
    end = time.monotonic()
    stream_start = marks.get("stream", end)
    return RelayResult(
        result=result, generate_s=stream_start - start, stream_s=marks.get("trailer", end) - stream_start,
        total_s=end - start, frames=result.frames,
        stage_s={"generate": stream_start - start, "stream+post": end - stream_start,
                 "upscale": result.upscale_s, "encode": result.encode_s},
    )

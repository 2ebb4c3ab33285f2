"""One PostProcess call from the client side: spec and header, wait to be accepted, then the frames.

A client still writing when the agent refuses (no such upscale model, a bad header) may be
told INTERNAL "Internal error from Core" by grpc aio instead of the real status, and a
refusal retried as if the agent had broken. So every caller goes through `post_process`:
it holds the chunks back until the agent accepts spec and header (Progress stage
"receive"), and it takes the agent's status from the ErrorStatus event the agent sends
before ending the call, which arrives intact whatever the transport status says.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import grpc

from artifex_agent.errors import ArtifexError
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.transport import wire
from artifex_agent.transport.channel import AgentStub

# The first byte of a GenerateEvent/PostProcessRequest holding the stream header (field 2).
_HEADER_TAG = 0x12
# The Progress stage by which the post agent accepts spec and header.
ACCEPTED = pb.STAGE_RECEIVE
_CODES = {code.value[0]: code for code in grpc.StatusCode}


class RemoteError(ArtifexError):
    """An agent answered a call with an error status."""

    def __init__(self, agent: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{agent}: {code.name}: {details}")
        self.agent = agent
        self.code = code
        self.details = details


# (agent, code, details) -> the exception to raise; split clients give AgentLost for a broken agent.
ErrorFactory = Callable[[str, grpc.StatusCode, str], RemoteError]
# (agent name, progress)
ProgressCallback = Callable[[str, pb.Progress], None]


def status_code(number: int) -> grpc.StatusCode:
    """The grpc status code with this number (an unknown number is UNKNOWN)."""
    return _CODES.get(number, grpc.StatusCode.UNKNOWN)


async def post_process(post: AgentStub, post_name: str, spec: pb.PostSpec, upstream: AsyncIterator[bytes], *,
                       on_progress: ProgressCallback | None = None, timeout: float | None = None,
                       error: ErrorFactory = RemoteError) -> pb.PostResult:
    """Send `spec`, then `upstream` (raw header, chunks, trailer), and return the agent's result.

    A failure of `upstream` ends the request stream without a trailer (the agent keeps
    nothing) and is raised in preference to whatever the agent then answers.
    """
    upstream_error: list[BaseException] = []
    accepted = asyncio.Event()
    over = False

    async def requests() -> AsyncIterator[bytes]:
        yield wire.encode_spec(spec)
        try:
            async for raw in upstream:
                if over:
                    return
                yield raw
                if raw[:1] == bytes((_HEADER_TAG,)):
                    await accepted.wait()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - raised by the caller below, once the call is over
            upstream_error.append(exc)

    call = post.post_process(requests(), timeout=timeout)
    result: pb.PostResult | None = None
    refused: RemoteError | None = None
    try:
        async for event in call:
            which = event.WhichOneof("event")
            if which == "result":
                result = event.result
            elif which == "error":
                refused = error(post_name, status_code(event.error.code), event.error.message)
                break
            elif which == "progress":
                if event.progress.current_stage == ACCEPTED:
                    accepted.set()
                if on_progress is not None:
                    on_progress(post_name, event.progress)
    except grpc.aio.AioRpcError as exc:
        if upstream_error:
            raise upstream_error[0] from None
        raise error(post_name, exc.code(), exc.details() or "") from None
    finally:
        over = True
        accepted.set()
        call.cancel()
    if upstream_error:
        raise upstream_error[0]
    if refused is not None:
        raise refused
    if result is None:
        raise error(post_name, grpc.StatusCode.UNKNOWN, "stream ended without a result")
    return result

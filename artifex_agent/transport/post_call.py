"""Streaming calls an agent may refuse mid-way, from the client side; and one PostProcess call.

A client still writing when the agent refuses (no such upscale model, a bad header or
hand-off) may be told INTERNAL "Internal error from Core" by grpc aio instead of the real
status: a write that fails as the call ends overwrites the status the agent sent
(grpc/grpc#36066), and a refusal would be retried as if the agent had broken. So the agent
sends its status first as a typed ErrorStatus event (services/errors.py
streaming_with_error_event), which arrives intact whatever the transport status says, and
the client takes the status from it (`refusal`). And a client holds its bulk back behind a
`Gate` until the agent accepts what came before it (spec, stream header, hand-off header),
so that most refusals meet no write at all. PostProcess (`post_process` below) and the
split calls (split/streams.py) both work this way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import grpc

from artifex_agent.errors import ArtifexError
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.transport import wire
from artifex_agent.transport.channel import AgentStub

# The Progress stage by which the post agent accepts spec and header.
ACCEPTED = pb.STAGE_RECEIVE
_CODES = {code.value[0]: code for code in grpc.StatusCode}
_HEADER = bytes((wire.HEADER,))


class RemoteError(ArtifexError):
    """An agent answered a call with an error status."""

    def __init__(self, agent: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{agent}: {code.name}: {details}")
        self.agent = agent
        self.code = code
        self.details = details


# (agent, code, details) -> the exception to raise; split clients give AgentLost for a broken agent.
ErrorFactory = Callable[[str, grpc.StatusCode, str], RemoteError]


class Gate:
    """Holds a request stream's bulk back until the agent accepts; open for good once the call is over."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self.over = False

    def accept(self) -> None:
        self._open.set()

    def close(self) -> None:
        """The call is over: a writer waiting here is let go, and should write nothing more."""
        self.over = True
        self._open.set()

    async def passed(self) -> bool:
        """Wait until accepted; False when the call ended instead."""
        await self._open.wait()
        return not self.over
# (agent name, progress)
ProgressCallback = Callable[[str, pb.Progress], None]


def status_code(number: int) -> grpc.StatusCode:
    """The grpc status code with this number (an unknown number is UNKNOWN)."""
    return _CODES.get(number, grpc.StatusCode.UNKNOWN)


def refusal(agent: str, status: pb.ErrorStatus, error: ErrorFactory = RemoteError) -> RemoteError:
    """The exception for an agent's in-band ErrorStatus event."""
    return error(agent, status_code(status.code), status.message)


async def post_process(post: AgentStub, post_name: str, spec: pb.PostSpec, upstream: AsyncIterator[bytes], *,
                       on_progress: ProgressCallback | None = None, timeout: float | None = None,
                       error: ErrorFactory = RemoteError) -> pb.PostResult:
    """Send `spec`, then `upstream` (raw header, chunks, trailer), and return the agent's result.

    A failure of `upstream` ends the request stream without a trailer (the agent keeps
    nothing) and is raised in preference to whatever the agent then answers.
    """
    upstream_error: list[BaseException] = []
    gate = Gate()

    async def requests() -> AsyncIterator[bytes]:
        yield wire.encode_spec(spec)
        try:
            async for raw in upstream:
                if gate.over:
                    return
                yield raw
                if raw[:1] == _HEADER and not await gate.passed():
                    return
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
                refused = refusal(post_name, event.error, error)
                break
            elif which == "progress":
                if event.progress.current_stage == ACCEPTED:
                    gate.accept()
                if on_progress is not None:
                    on_progress(post_name, event.progress)
    except grpc.aio.AioRpcError as exc:
        if upstream_error:
            raise upstream_error[0] from None
        raise error(post_name, exc.code(), exc.details() or "") from None
    finally:
        gate.close()
        call.cancel()
    if upstream_error:
        raise upstream_error[0]
    if refused is not None:
        raise refused
    if result is None:
        raise error(post_name, grpc.StatusCode.UNKNOWN, "stream ended without a result")
    return result

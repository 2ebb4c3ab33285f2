"""Client side of the split RPCs: drive two agents, forward their bulk messages byte for byte.

Each function returns the job's output as raw messages in the Generate stream format
(header 2, chunks 3, trailer 4), whichever agents made it, and reports progress per agent.
The client never parses a chunk: it routes messages by their first byte, the protobuf
tag of the one field they hold (transport/wire.py computes them from proto/artifex/v1/split.proto).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.proto.artifex.v1 import split_pb2 as spb
from artifex_agent.split import messages
from artifex_agent.split.local import LocalSplit
from artifex_agent.transport import methods
from artifex_agent.transport.channel import AgentStub
from artifex_agent.transport.post_call import Gate, RemoteError, refusal
from artifex_agent.transport.wire import ERROR, HANDOFF, HEADER, NOISE, PROGRESS, TRAILER

# Statuses that mean the agent (or the way to it) broke, not that the job is wrong: fail over on these.
LOST_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL,
                        grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS, grpc.StatusCode.CANCELLED,
                        grpc.StatusCode.ABORTED})

# (agent name, progress)
ProgressCallback = Callable[[str, pb.Progress], None]


class AgentLost(RemoteError):
    """An agent of the job died or broke mid-way (its stream failed with UNAVAILABLE, INTERNAL...)."""


def agent_error(agent: str, code: grpc.StatusCode, details: str) -> RemoteError:
    """AgentLost when the status says the agent broke (the job fails over), else the refusal as it is."""
    return (AgentLost if code in LOST_CODES else RemoteError)(agent, code, details)


class Inband:
    """Refusals agents sent in band (an ErrorStatus event) before the status, by agent.

    A client still writing when an agent refuses may see INTERNAL instead of the real
    status (transport/post_call.py); the in-band copy is the truth, and decides whether
    the agent is lost or the job refused.
    """

    def __init__(self) -> None:
        self.errors: dict[str, RemoteError] = {}

    def note(self, agent: str, raw: bytes) -> bool:
        """Remember an error event; True when `raw` was one."""
        if raw[0] != ERROR:
            return False
        self.errors[agent] = refusal(agent, spb.DenoiseEvent.FromString(raw).error, agent_error)
        return True

    def error(self, agent: str, exc: grpc.aio.AioRpcError) -> RemoteError:
        """What the agent's failed call means: its in-band refusal if it sent one, else the call's status."""
        return self.errors.get(agent) or agent_error(agent, exc.code(), exc.details() or "")


@dataclass
class SplitStats:
    """Bytes and time spent moving state between the agents of one job."""

    handoff_bytes: int = 0
    handoff_s: float = 0.0
    exchange_bytes: int = 0
    exchange_messages: int = 0


class Calls:
    """The calls a job opened, so that any way out of it cancels them all."""

    def __init__(self) -> None:
        self._calls: list[Any] = []

    def add(self, call: Any) -> Any:
        self._calls.append(call)
        return call

    def cancel(self) -> None:
        for call in self._calls:
            call.cancel()
        self._calls.clear()


# An agent to call: over gRPC, or this agent's own SplitService in process (split/local.py).
Peer = AgentStub | LocalSplit


def denoise_call(stub: Peer, requests: Any, timeout: float | None = None) -> Any:
    """Split.Denoise: raw DenoiseRequest messages in, raw DenoiseEvent messages out."""
    if isinstance(stub, LocalSplit):
        return stub.denoise(requests)
    return methods.DENOISE.multicallable(stub.channel)(requests, metadata=stub.metadata, timeout=timeout)


def cfg_call(stub: Peer, requests: Any, timeout: float | None = None) -> Any:
    """Split.CfgPeer: raw CfgRequest messages in, raw CfgEvent messages out."""
    if isinstance(stub, LocalSplit):
        return stub.cfg_peer(requests)
    return methods.CFG_PEER.multicallable(stub.channel)(requests, metadata=stub.metadata, timeout=timeout)


def _progress(raw: bytes) -> pb.Progress:
    # wire.PROGRESS is one field number in GenerateEvent, DenoiseEvent and CfgEvent alike (checked there).
    return pb.GenerateEvent.FromString(raw).progress


def _report(on_progress: ProgressCallback | None, agent: str, raw: bytes) -> int:
    """Pass a progress message on; returns its stage."""
    p = _progress(raw)
    if on_progress is not None:
        on_progress(agent, p)
    return p.current_stage


async def _once(message: bytes) -> AsyncIterator[bytes]:
    yield message


async def whole_stream(stub: AgentStub, name: str, request: pb.GenerateRequest, calls: Calls, *,
                       on_progress: ProgressCallback | None = None, timeout: float | None = None
                       ) -> AsyncIterator[bytes]:
    """The job on one agent through Generate (the unsplit path, and the failover)."""
    call = calls.add(stub.generate(request, timeout=timeout))
    try:
        async for raw in call:
            if raw[0] == PROGRESS:
                _report(on_progress, name, raw)
            else:
                yield raw
    except grpc.aio.AioRpcError as exc:
        # Generate takes no stream from us: nothing to race its status, no in-band copy to prefer.
        raise agent_error(name, exc.code(), exc.details() or "") from None


async def expert_stream(agents: dict[str, Peer], request: pb.GenerateRequest, first: str, second: str,
                        calls: Calls, stats: SplitStats, *, on_progress: ProgressCallback | None = None,
                        stop_step: int = 0, timeout: float | None = None) -> AsyncIterator[bytes]:
    """High-noise steps on `first`, the hand-off streamed through here, low-noise steps and output on `second`.

    `stop_step` > 0 hands off after that step instead of at the expert boundary (any step works).
    """
    spec1 = spb.DenoiseSpec(request=request, handoff=True, stop_at_boundary=not stop_step, stop_step=stop_step)
    call_a = calls.add(denoise_call(agents[first], _once(messages.denoise_request(spec=spec1)), timeout))
    upstream: list[BaseException] = []
    inband = Inband()
    gate = Gate()

    async def feed_second() -> AsyncIterator[bytes]:
        yield messages.denoise_request(spec=spb.DenoiseSpec(request=request, resume=True))
        began = 0.0
        try:
            async for raw in call_a:
                if inband.note(first, raw):
                    continue
                if raw[0] == PROGRESS:
                    _report(on_progress, first, raw)
                    continue
                if raw[0] == HANDOFF:
                    began = time.monotonic()
                stats.handoff_bytes += len(raw)
                yield raw
                if raw[0] == HANDOFF and not await gate.passed():
                    # Not writing the tensors while the second agent may refuse the header; it ended the call.
                    return
                if raw[0] == TRAILER:
                    stats.handoff_s = time.monotonic() - began
                    return  # end the request stream now: nothing follows a trailer
        except grpc.aio.AioRpcError as exc:
            # Ending without the trailer makes the second agent drop what it got.
            upstream.append(inband.error(first, exc))

    call_b = calls.add(denoise_call(agents[second], feed_second(), timeout))
    try:
        async for raw in call_b:
            if inband.note(second, raw):
                continue
            if raw[0] == PROGRESS:
                if _report(on_progress, second, raw) == pb.STAGE_ACCEPTED:
                    gate.accept()
            else:
                yield raw
    except grpc.aio.AioRpcError as exc:
        # The second agent failing on a truncated hand-off is the first agent's fault.
        if upstream:
            raise upstream[0] from None
        raise inband.error(second, exc) from None
    finally:
        # A request stream left waiting would outlive its finished call.
        gate.close()
    if upstream:
        raise upstream[0]


_END = object()


async def cfg_stream(agents: dict[str, Peer], request: pb.GenerateRequest, first: str, second: str,
                     calls: Calls, stats: SplitStats, *, on_progress: ProgressCallback | None = None,
                     timeout: float | None = None) -> AsyncIterator[bytes]:
    """Conditional passes and the output on `first`, unconditional passes on `second`, predictions swapped here."""
    inboxes: dict[str, asyncio.Queue[bytes | None]] = {first: asyncio.Queue(), second: asyncio.Queue()}
    out: asyncio.Queue[Any] = asyncio.Queue()
    inband = Inband()

    async def requests(spec: spb.CfgSpec, inbox: asyncio.Queue[bytes | None]) -> AsyncIterator[bytes]:
        yield messages.cfg_request(spec=spec)
        while (raw := await inbox.get()) is not None:
            yield raw

    def open_half(name: str, role: int, emit: bool) -> Any:
        spec = spb.CfgSpec(request=request, role=role, emit_output=emit)  # type: ignore[arg-type]
        return calls.add(cfg_call(agents[name], requests(spec, inboxes[name]), timeout))

    async def pump(name: str, peer: str, call: Any) -> None:
        # One agent's events: predictions go to the peer, the output to our caller.
        to_peer = False
        try:
            async for raw in call:
                tag = raw[0]
                if inband.note(name, raw):
                    continue
                if tag == PROGRESS:
                    _report(on_progress, name, raw)
                    continue
                if tag == NOISE:
                    to_peer = True
                elif tag == HEADER:
                    to_peer = False
                if to_peer:
                    stats.exchange_bytes += len(raw)
                    stats.exchange_messages += 1
                    inboxes[peer].put_nowait(raw)
                else:
                    out.put_nowait(raw)
            inboxes[peer].put_nowait(None)
            if name == first:
                out.put_nowait(_END)
        except grpc.aio.AioRpcError as exc:
            out.put_nowait(inband.error(name, exc))
        except Exception as exc:  # surfaced to the caller through the queue
            out.put_nowait(exc)

    pumps = [asyncio.ensure_future(pump(first, second, open_half(first, spb.CFG_ROLE_COND, True))),
             asyncio.ensure_future(pump(second, first, open_half(second, spb.CFG_ROLE_UNCOND, False)))]
    try:
        while (item := await out.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        for task in pumps:
            task.cancel()
        for inbox in inboxes.values():
            inbox.put_nowait(None)  # ends both request streams, even of calls that already finished

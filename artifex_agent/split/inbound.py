"""What a client sends to a split agent: the spec, a hand-off, the peer's CFG predictions, checked as they come.

Read on the event loop under the agent's stream limits (a `Stream`: services/admission.Ticket);
a CFG half's worker thread takes the peer's predictions from a PeerInbox step by step.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

import torch

from artifex_agent.engines.generation import GenerationCancelled
from artifex_agent.errors import RequestError, StreamError
from artifex_agent.proto.artifex.v1 import split_pb2 as spb
from artifex_agent.split import cfg as cfg_split
from artifex_agent.split import handoff, messages

# How long a CFG half waits for one prediction from its peer. The client cancels both halves
# as soon as either fails, so this only ends a half whose client vanished without a word.
PEER_TIMEOUT_S = 1800.0


class Stream(Protocol):
    """One request stream's share of the agent: its work slot, its bytes, its timed reads."""

    def begin(self) -> None: ...

    def hold(self, nbytes: int) -> None: ...

    async def read(self, messages: AsyncIterator[bytes], what: str, *, idle: bool = True) -> bytes: ...

    def messages(self, messages: AsyncIterator[bytes], what: str, *, idle: bool = True) -> AsyncIterator[bytes]: ...


async def read_spec(stream: Stream, incoming: AsyncIterator[bytes], cls: Any, what: str) -> Any:
    """The stream's first message, which must be its spec (`what`, of request type `cls`)."""
    try:
        raw = await stream.read(incoming, f"the {what}")
    except StopAsyncIteration:
        raise RequestError(f"the stream ended before its {what}") from None
    m = messages.decode(raw, cls)
    if m.kind != "spec":
        raise RequestError(f"the first message of the stream must be a {what}, not a {m.kind}")
    return m.value


async def handoff_header(stream: Stream, incoming: AsyncIterator[bytes], rx: handoff.HandoffReceiver) -> int:
    """The hand-off's header, checked against this agent before any tensor byte is read; returns its step."""
    try:
        # The first agent is still denoising: only the stream's deadline bounds this wait.
        raw = await stream.read(incoming, "the hand-off", idle=False)
    except StopAsyncIteration:
        raise StreamError("the stream ended before the hand-off") from None
    m = messages.decode(raw, spb.DenoiseRequest)
    if m.kind != "handoff":
        raise StreamError(f"a resumed Denoise stream needs a hand-off header after its spec, not a {m.kind}")
    stream.begin()
    # HandoffReceiver allocates every tensor the header announces at once: charge that before it does.
    stream.hold(int(m.value.total_bytes))
    rx.on_header(m.value)
    return int(m.value.next_step)


async def handoff_body(stream: Stream, incoming: AsyncIterator[bytes], rx: handoff.HandoffReceiver
                       ) -> handoff.Handoff:
    """The rest of a hand-off, checked as it arrives."""
    async for raw in stream.messages(incoming, "the rest of the hand-off"):
        m = messages.decode(raw, spb.DenoiseRequest)
        if m.kind == "chunk":
            rx.on_chunk(m.value)
        elif m.kind == "trailer":
            rx.on_trailer(m.value)
            break
        else:
            raise StreamError(f"unexpected {m.kind} message inside a hand-off")
    return rx.finish()


class PeerInbox:
    """The peer's predictions for one CFG half: fed from the stream, taken by the worker one step at a time."""

    def __init__(self, model: str, cancel: threading.Event) -> None:
        self.model = model
        self.cancel = cancel
        # This agent's identity, set by the worker once its pipeline is up (split/stages.py cfg_half).
        self.mine = spb.NoiseHeader()
        self.peer = cfg_split.NoiseReceiver()
        self._items: queue.Queue[tuple[spb.NoiseHeader, torch.Tensor] | BaseException] = queue.Queue()

    async def feed(self, raws: AsyncIterator[bytes]) -> None:
        """Reassemble the stream's predictions until it ends; any failure goes to the worker, which fails the call."""
        try:
            async for raw in raws:
                m = messages.decode(raw, spb.CfgRequest)
                if m.kind == "noise":
                    self.peer.on_header(m.value)
                elif m.kind == "chunk":
                    self.peer.on_chunk(m.value)
                elif m.kind == "trailer":
                    self._items.put(self.peer.on_trailer(m.value))
                else:
                    raise StreamError(f"unexpected {m.kind} message in a CfgPeer stream")
            self._items.put(StreamError("the client closed the stream before the peer's predictions ended"))
        except Exception as exc:
            self._items.put(exc)

    def receive(self, step: int) -> torch.Tensor:
        """The peer's prediction for `step` (in the worker), checked against this agent's identity."""
        deadline = time.monotonic() + PEER_TIMEOUT_S
        while True:
            if self.cancel.is_set():
                raise GenerationCancelled(f"cancelled waiting for the peer's step {step + 1}")
            try:
                item = self._items.get(timeout=0.5)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise StreamError(f"no prediction from the peer for step {step + 1} "
                                      f"in {PEER_TIMEOUT_S:.0f}s") from None
                continue
            if isinstance(item, BaseException):
                raise item
            noise, tensor = item
            cfg_split.check_identity(noise, self.mine, self.model)
            if noise.step != step:
                raise StreamError(f"the peer sent step {noise.step + 1}'s prediction; "
                                  f"this agent is at step {step + 1}")
            return tensor

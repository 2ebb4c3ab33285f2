"""CFG-parallel: one agent runs every step's conditional pass, the other its unconditional pass.

WanPipeline runs the two passes as two separate transformer calls on the same latents
(not one batched call), so each pass gives the same bits on another process with the
same weights, dtype and thread count. After trading predictions both agents apply the
same guidance combination and scheduler step to the same latents, so they stay in
lockstep without ever sending latents: only one noise prediction per step and direction.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import torch

from artifex_agent import PROTOCOL_VERSION
from artifex_agent.engines.generation import GenerationCancelled
from artifex_agent.errors import RequestError, StreamError
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.proto.artifex.v1 import split_pb2 as spb
from artifex_agent.split import messages
from artifex_agent.split.denoise import Denoiser, DenoiseState, Pass, StepCallback
from artifex_agent.split.handoff import PeerMismatch
from artifex_agent.transport import frames

logger = logging.getLogger(__name__)

GUIDANCE_ONE = ("CFG-parallel needs guidance > 1: with guidance 1 there is no unconditional pass to run on the "
                "other agent (use split 'experts' or 'none')")
Send = Callable[[int, torch.Tensor], None]
Receive = Callable[[int], torch.Tensor]


def check_guidance(guidance_scale: float) -> None:
    """Refuse CFG-parallel for a job without classifier-free guidance."""
    if not guidance_scale > 1.0:
        raise RequestError(GUIDANCE_ONE)


def run_half(denoiser: Denoiser, role: Pass, send: Send, receive: Receive, *, on_step: StepCallback | None = None,
             cancel: threading.Event | None = None) -> DenoiseState:
    """Every step: this agent's pass, send it, take the peer's, combine, step. Returns the final state."""
    check_guidance(denoiser.guidance)
    state = denoiser.start(passes=(role,))
    while state.next_step < denoiser.total:
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled(f"cancelled before step {state.next_step + 1} of {denoiser.total}")
        step = state.next_step
        mine = denoiser.predict(state, role)
        send(step, mine)
        theirs = receive(step)
        if theirs.shape != mine.shape or theirs.dtype != mine.dtype:
            raise StreamError(f"the peer's step {step} prediction is {messages.dtype_name(theirs.dtype)} "
                              f"{list(theirs.shape)}; this agent's is {messages.dtype_name(mine.dtype)} "
                              f"{list(mine.shape)}")
        theirs = theirs.to(mine.device)
        cond, uncond = (mine, theirs) if role == "cond" else (theirs, mine)
        denoiser.advance(state, cond, uncond)
        if on_step is not None:
            on_step(state.next_step, denoiser.total)
    return state


def identity(denoiser: Denoiser, fingerprint: str) -> spb.NoiseHeader:
    """What this agent computes with, sent with every prediction so that the peer can refuse a mismatch."""
    config_sha, schedule_sha = denoiser.fingerprints()
    return spb.NoiseHeader(model_fingerprint=fingerprint, scheduler_config_sha256=config_sha,
                           schedule_sha256=schedule_sha)


def check_identity(theirs: spb.NoiseHeader, mine: spb.NoiseHeader, model: str) -> None:
    """Refuse predictions made with other model files or another scheduler (they would not combine)."""
    if theirs.tensor.protocol_version != PROTOCOL_VERSION:
        raise PeerMismatch(f"the peer speaks protocol {theirs.tensor.protocol_version}, this agent speaks "
                           f"{PROTOCOL_VERSION}: run the same artifex-agent version on both PCs")
    if theirs.model_fingerprint != mine.model_fingerprint:
        raise PeerMismatch(f"model {model!r} differs between the two agents (fingerprint "
                           f"{theirs.model_fingerprint[:12]} there, {mine.model_fingerprint[:12]} here): "
                           "both need the same files")
    if (theirs.scheduler_config_sha256, theirs.schedule_sha256) != (mine.scheduler_config_sha256,
                                                                   mine.schedule_sha256):
        raise PeerMismatch("the peer's scheduler differs from this agent's (config or timesteps)")


def noise_messages(step: int, tensor: torch.Tensor, ident: spb.NoiseHeader, *, model: str = "",
                   chunk_bytes: int = 0) -> list[bytes]:
    """One prediction as CfgEvent messages: a NoiseHeader, raw chunks, a trailer with its checksum."""
    data = messages.tensor_bytes(tensor)
    header = frames.latent_header(tuple(tensor.shape), messages.dtype_name(tensor.dtype), 1, 0.0, model=model)
    sender = frames.FrameSender(header, chunk_bytes)
    noise = spb.NoiseHeader()
    noise.CopyFrom(ident)
    noise.step = step
    noise.tensor.CopyFrom(header)
    out = [messages.cfg_event(noise=noise)]
    out += list(sender.frame_messages(data))
    out.append(messages.cfg_event(trailer=sender.trailer()))
    return out


class NoiseReceiver:
    """Reassembles the peer's predictions, one step at a time, checked like any frame stream."""

    def __init__(self) -> None:
        self.step = -1
        self.noise = spb.NoiseHeader()
        self._rx: frames.FrameReceiver | None = None
        self._frame: bytearray | None = None
        self.bytes = 0

    @property
    def busy(self) -> bool:
        return self._rx is not None

    def on_header(self, noise: spb.NoiseHeader) -> None:
        if self._rx is not None:
            raise StreamError(f"a new prediction began inside step {self.step}'s")
        if noise.tensor.kind != pb.PAYLOAD_KIND_LATENT or noise.tensor.frame_count != 1:
            raise StreamError("a noise prediction is one LATENT tensor")
        if noise.tensor.protocol_version != PROTOCOL_VERSION:
            # Checked before FrameReceiver does: a peer on another version is a setup problem, not data loss.
            raise PeerMismatch(f"the peer speaks protocol {noise.tensor.protocol_version}, this agent speaks "
                               f"{PROTOCOL_VERSION}: run the same artifex-agent version on both PCs")
        self._rx = frames.FrameReceiver()
        self._rx.on_header(noise.tensor)
        self.step = noise.step
        self.noise = noise
        self._frame = None

    def on_chunk(self, view: memoryview) -> None:
        if self._rx is None:
            raise StreamError("prediction data arrived before its header")
        for frame in self._rx.on_chunk(view):
            self._frame = bytearray(frame)

    def on_trailer(self, trailer: pb.StreamTrailer) -> tuple[spb.NoiseHeader, torch.Tensor]:
        """Check the trailer; returns (the prediction's header, the prediction)."""
        rx = self._rx
        if rx is None or rx.header is None:
            raise StreamError("prediction trailer arrived before its header")
        rx.on_trailer(trailer)
        assert self._frame is not None
        self._rx = None
        self.bytes += len(self._frame)
        tensor = messages.tensor_from(self._frame, rx.header.dtype, tuple(rx.header.shape))
        self._frame = None
        return self.noise, tensor

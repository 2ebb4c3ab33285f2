"""Split: part of a job (Denoise: some steps, a hand-off in or out) or one half of a CFG-parallel job.

Torch runs in a worker thread holding the engine (one job at a time); the handler moves
messages between that thread and the stream. A hand-off is received whole before the
engine is taken, so the sending agent is free as soon as its bytes are out, and with a
queue the two stages of consecutive jobs overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import queue
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import wraps
from typing import Any

import grpc
import numpy as np
import torch

from artifex_agent.config import AgentConfig
from artifex_agent.engines.generation import FPS, GenerationCancelled, GenerationEngine, GenerationRequest
from artifex_agent.engines.gpu import is_oom, release_memory
from artifex_agent.engines.models import resolve_model
from artifex_agent.errors import ArtifexError, RequestError, ResourceError, StreamError
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.proto.artifex.v1 import split_pb2 as spb
from artifex_agent.services.activity import Activity
from artifex_agent.services.admission import Admission, Limits, Ticket
from artifex_agent.services.errors import status_for, streaming
from artifex_agent.services.generate import to_engine_request
from artifex_agent.split import cfg as cfg_split
from artifex_agent.split import handoff, messages
from artifex_agent.split.denoise import Denoiser, Pass
from artifex_agent.transport import frames, wire

logger = logging.getLogger(__name__)

SERVICE = "artifex.v1.Split"
# How long a CFG half waits for one prediction from its peer. The client cancels both halves
# as soon as either fails, so this only ends a half whose client vanished without a word.
PEER_TIMEOUT_S = 1800.0
# Stage-2 calls wait for the engine in these threads while earlier jobs run.
WORKERS = 4
_ROLES: dict[int, Pass] = {spb.CFG_ROLE_COND: "cond", spb.CFG_ROLE_UNCOND: "uncond"}


class _Bridge:
    """A job's worker thread and its async handler: what the thread emits is yielded in order."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.outbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.cancel = threading.Event()
        self.future: asyncio.Future[Any] | None = None

    def emit(self, message: bytes) -> None:
        """Thread-safe; dropped once the handler is gone."""
        try:
            self.loop.call_soon_threadsafe(self.outbox.put_nowait, message)
        except RuntimeError:  # the event loop closed under a cancelled call
            pass

    def progress(self, stage: str, step: int, total: int, started: float, message: str = "") -> None:
        # Progress is field 1 of DenoiseEvent, CfgEvent and GenerateEvent alike.
        self.emit(wire.encode_progress(pb.Progress(stage=stage, step=step, total=total, message=message,
                                                   elapsed_s=time.monotonic() - started)))

    def check_cancel(self) -> None:
        """In the worker, once it holds the engine: the client may have gone while it waited."""
        if self.cancel.is_set():
            raise GenerationCancelled("cancelled while waiting for the engine")

    def start(self, executor: ThreadPoolExecutor, work: Callable[[], Any]) -> None:
        # The copied context carries the job id into the worker's log lines.
        self.future = self.loop.run_in_executor(executor, contextvars.copy_context().run, _oom_guard, work)

    async def drain(self) -> AsyncIterator[bytes]:
        """Messages until the worker is done (its result or error is then in `future`)."""
        assert self.future is not None
        while not self.future.done():
            getter = asyncio.ensure_future(self.outbox.get())
            done, _ = await asyncio.wait({getter, self.future}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                yield getter.result()
            else:
                getter.cancel()
        while not self.outbox.empty():
            yield self.outbox.get_nowait()


def inband_errors(fn: Callable[..., AsyncIterator[bytes]]) -> Callable[..., AsyncIterator[bytes]]:
    """Send a refusal's status as a last Progress(stage="error") before the abort that carries it.

    A client still writing when the server aborts may be told INTERNAL "Internal error from
    Core" instead of the real status (grpc aio, seen here in about half of such races); the
    in-band copy arrives first either way, and split clients prefer it.
    """
    @wraps(fn)
    async def wrapper(self: Any, request_iterator: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        try:
            async for item in fn(self, request_iterator, context):
                yield item
        except ArtifexError as exc:
            yield wire.encode_progress(pb.Progress(stage="error", message=f"{status_for(exc).name}: {exc}"))
            raise
    return wrapper


def _oom_guard(work: Callable[[], Any]) -> Any:
    oom = False
    try:
        return work()
    except Exception as exc:
        if not is_oom(exc):
            raise
        oom = True
    if oom:
        # Outside the except block, so the traceback's frames (holding activations) are gone first.
        release_memory()
        raise ResourceError('out of GPU memory in a split job; try fewer frames, a smaller size or offload = "auto"')


class SplitService:
    """Denoise and CfgPeer: the agent's side of a job shared with another agent."""

    def __init__(self, engine: GenerationEngine, cfg: AgentConfig, activity: Activity, chunk_bytes: int = 0,
                 admission: Admission | None = None) -> None:
        self.engine = engine
        self.cfg = cfg
        self.activity = activity
        self.chunk_bytes = chunk_bytes
        self.admission = admission or Admission(Limits.of(cfg))
        self.executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="split")

    def handler(self) -> grpc.GenericRpcHandler:
        """Raw bytes both ways (None serializers), like the other bulk streams."""
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Denoise": grpc.stream_stream_rpc_method_handler(self.Denoise),
            "CfgPeer": grpc.stream_stream_rpc_method_handler(self.CfgPeer),
        })

    def _request(self, request: pb.GenerateRequest) -> GenerationRequest:
        req = to_engine_request(request, self.cfg)
        self.engine.validate(req)
        if req.task != "t2v":
            raise RequestError("split jobs run text-to-video only; run image-to-video jobs whole (split none)")
        return req

    async def _fingerprint(self, model: str) -> str:
        entry = resolve_model(self.engine.models_root, model)
        return await asyncio.to_thread(handoff.model_fingerprint, entry.path)

    def _prefetch(self, model: str) -> None:
        future = asyncio.get_running_loop().run_in_executor(self.executor, self.engine.load, model)
        # A failed load fails again, with its message, when the job takes the engine.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())

    @streaming
    @inband_errors
    async def Denoise(self, request_iterator: AsyncIterable[bytes],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        with self.admission.stream("Denoise") as ticket:
            async with contextlib.aclosing(self._denoise(aiter(request_iterator), ticket)) as events:
                async for event in events:
                    yield event

    async def _denoise(self, incoming: AsyncIterator[bytes], ticket: Ticket) -> AsyncGenerator[bytes, None]:
        started = time.monotonic()
        spec: spb.DenoiseSpec = await _spec(ticket, incoming, spb.DenoiseRequest, "DenoiseSpec")
        req = self._request(spec.request)
        if not spec.resume:
            ticket.begin()  # a resumed stream begins with its hand-off (_handoff_header)
        fingerprint = await self._fingerprint(req.model)
        with self.activity.track("denoise", spec.request.job_id):
            got = None
            if spec.resume:
                # Load the model while the other agent still runs the first steps.
                self._prefetch(req.model)
                rx = handoff.HandoffReceiver(request=spec.request, fingerprint=fingerprint)
                next_step = await _handoff_header(ticket, incoming, rx)
                # The client holds the tensors back until the header is accepted (see inband_errors).
                yield wire.encode_progress(pb.Progress(stage="accepted", step=next_step, total=req.steps))
                got = await _handoff_body(ticket, incoming, rx)
            yield wire.encode_progress(pb.Progress(stage="queued", message=f"model {req.model}"))
            bridge = _Bridge()

            # One side of an expert split needs one expert: only that one is kept resident here, so two
            # 24 GB cards hold both A14B experts between them without swapping.
            start = got.state.next_step if got is not None else 0
            if spec.stop_at_boundary:
                experts: frozenset[str] | None = frozenset({"transformer"})
            else:
                experts = await asyncio.to_thread(self.engine.experts_for_steps, req.model, req.steps, start,
                                                  spec.stop_step or req.steps, req)

            def work() -> tuple[spb.HandoffHeader | None, list[torch.Tensor]]:
                with self.engine.exclusive(req.model, req, experts=experts) as pipe:
                    bridge.check_cancel()
                    d = Denoiser(pipe, req)
                    if got is not None:
                        handoff.verify(got, d)
                        state = d.restore(got.state)
                    else:
                        state = d.start()
                    if spec.stop_at_boundary and d.boundary_timestep is None:
                        raise RequestError(f"an expert split needs a two-expert model (Wan2.2 A14B); {req.model} "
                                           "has one expert: use split 'cfg' or 'none'")
                    stop = d.boundary_step() if spec.stop_at_boundary else min(spec.stop_step or d.total, d.total)
                    if stop < state.next_step:
                        raise RequestError(f"stop step {stop} is before the hand-off's step {state.next_step}")
                    bridge.progress("denoise", state.next_step, d.total, started,
                                    f"steps {state.next_step + 1}..{stop} of {d.total}")
                    d.run(state, stop, cancel=bridge.cancel,
                          on_step=lambda step, total: bridge.progress("denoise", step, total, started))
                    if spec.handoff:
                        header, tensors = handoff.build_header(d.snapshot(state), d, spec.request, fingerprint)
                        return header, [t.detach().to("cpu").contiguous() for t in tensors]
                    return None, [state.latents.to("cpu", torch.float32).contiguous()]

            bridge.start(self.executor, work)
            try:
                async for message in bridge.drain():
                    yield message
                assert bridge.future is not None
                header, tensors = bridge.future.result()
            finally:
                # The client went away (or we failed): stop between steps and free the engine.
                bridge.cancel.set()
            if header is not None:
                yield wire.encode_progress(pb.Progress(stage="handoff", step=header.next_step,
                                                       total=header.total_steps, elapsed_s=time.monotonic() - started))
                for message in handoff.encode(header, tensors, self.chunk_bytes):
                    yield message
                logger.info("job %s: handed off after step %d of %d (%d bytes)", spec.request.job_id or "-",
                            header.next_step, header.total_steps, header.total_bytes)
            else:
                async for message in self._output(req, spec.request, tensors[0], started):
                    yield message

    @streaming
    @inband_errors
    async def CfgPeer(self, request_iterator: AsyncIterable[bytes],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        with self.admission.stream("CfgPeer") as ticket:
            async with contextlib.aclosing(self._cfg_peer(aiter(request_iterator), ticket)) as events:
                async for event in events:
                    yield event

    async def _cfg_peer(self, incoming: AsyncIterator[bytes], ticket: Ticket) -> AsyncGenerator[bytes, None]:
        started = time.monotonic()
        spec: spb.CfgSpec = await _spec(ticket, incoming, spb.CfgRequest, "CfgSpec")
        ticket.begin()
        cfg_split.check_guidance(spec.request.guidance_scale or 1.0)
        role = _ROLES.get(spec.role)
        if role is None:
            raise RequestError("a CFG-parallel half needs a role: COND or UNCOND")
        req = self._request(spec.request)
        fingerprint = await self._fingerprint(req.model)
        inbox: queue.Queue[tuple[spb.NoiseHeader, torch.Tensor] | BaseException] = queue.Queue()
        bridge = _Bridge()
        peer = cfg_split.NoiseReceiver()
        mine = spb.NoiseHeader()  # this agent's identity, set once its pipeline is up

        def send(step: int, tensor: torch.Tensor) -> None:
            for message in cfg_split.noise_messages(step, tensor, mine, model=req.model,
                                                    chunk_bytes=self.chunk_bytes):
                bridge.emit(message)

        def receive(step: int) -> torch.Tensor:
            deadline = time.monotonic() + PEER_TIMEOUT_S
            while True:
                if bridge.cancel.is_set():
                    raise GenerationCancelled(f"cancelled waiting for the peer's step {step + 1}")
                try:
                    item = inbox.get(timeout=0.5)
                except queue.Empty:
                    if time.monotonic() > deadline:
                        raise StreamError(f"no prediction from the peer for step {step + 1} "
                                          f"in {PEER_TIMEOUT_S:.0f}s") from None
                    continue
                if isinstance(item, BaseException):
                    raise item
                noise, tensor = item
                cfg_split.check_identity(noise, mine, req.model)
                if noise.step != step:
                    raise StreamError(f"the peer sent step {noise.step + 1}'s prediction; "
                                      f"this agent is at step {step + 1}")
                return tensor

        def work() -> torch.Tensor:
            with self.engine.exclusive(req.model, req) as pipe:
                bridge.check_cancel()
                d = Denoiser(pipe, req)
                mine.CopyFrom(cfg_split.identity(d, fingerprint))
                state = cfg_split.run_half(d, role, send, receive, cancel=bridge.cancel,
                                           on_step=lambda step, total: bridge.progress("denoise", step, total,
                                                                                      started))
                return state.latents.to("cpu", torch.float32).contiguous()

        async def read_peer() -> None:
            try:
                # Predictions come as fast as the peer's GPU steps: the deadline bounds this, PEER_TIMEOUT_S each step.
                async for raw in ticket.messages(incoming, "the peer's prediction", idle=False):
                    m = messages.decode(raw, spb.CfgRequest)
                    if m.kind == "noise":
                        peer.on_header(m.value)
                    elif m.kind == "chunk":
                        peer.on_chunk(m.value)
                    elif m.kind == "trailer":
                        inbox.put(peer.on_trailer(m.value))
                    else:
                        raise StreamError(f"unexpected {m.kind} message in a CfgPeer stream")
                inbox.put(StreamError("the client closed the stream before the peer's predictions ended"))
            except Exception as exc:  # handed to the worker, which fails the call with it
                inbox.put(exc)

        with self.activity.track("cfg", spec.request.job_id):
            yield wire.encode_progress(pb.Progress(stage="queued", message=f"model {req.model}, {role} pass"))
            reader = asyncio.ensure_future(read_peer())
            bridge.start(self.executor, work)
            try:
                async for message in bridge.drain():
                    yield message
                assert bridge.future is not None
                latents = bridge.future.result()
            finally:
                bridge.cancel.set()
                reader.cancel()
            logger.info("job %s: %s half done, %d prediction bytes received", spec.request.job_id or "-", role,
                        peer.bytes)
            if spec.emit_output:
                async for message in self._output(req, spec.request, latents, started):
                    yield message

    async def _output(self, req: GenerationRequest, request: pb.GenerateRequest, latents: torch.Tensor,
                      started: float) -> AsyncIterator[bytes]:
        """The job's output, byte-identical to a Generate stream: latents, or frames decoded here."""
        fps = FPS[resolve_model(self.engine.models_root, req.model).kind]
        rgb = None
        if req.output != "latent":
            loop = asyncio.get_running_loop()
            yield wire.encode_progress(pb.Progress(stage="decode", elapsed_s=time.monotonic() - started))
            rgb = await loop.run_in_executor(self.executor, self.engine.decode, req.model, latents)
        yield wire.encode_progress(pb.Progress(stage="stream", elapsed_s=time.monotonic() - started))
        for message in output_messages(latents, rgb, request, fps, self.chunk_bytes):
            yield message


def output_messages(latents: torch.Tensor, rgb: np.ndarray | None, request: pb.GenerateRequest, fps: float,
                    chunk_bytes: int = 0) -> Iterator[bytes]:
    """Header, chunks and trailer of latents (rgb None) or uint8 frames (clips, F, H, W, 3)."""
    clips: Any
    if rgb is None:
        header = frames.latent_header(tuple(latents.shape[1:]), messages.dtype_name(latents.dtype), latents.shape[0],
                                      fps, clip_count=latents.shape[0], model=request.model, width=request.width,
                                      height=request.height)
        clips = (latents[i].numpy() for i in range(latents.shape[0]))
    else:
        n_clips, n_frames, h, w, _ = rgb.shape
        header = frames.rgb_header(w, h, n_clips * n_frames, fps, clip_count=n_clips, model=request.model)
        clips = (np.ascontiguousarray(rgb[c, f]) for c in range(n_clips) for f in range(n_frames))
    sender = frames.FrameSender(header, chunk_bytes)
    yield sender.header_message()
    for frame in clips:
        yield from sender.frame_messages(frame)
    yield sender.trailer_message()


async def _spec(ticket: Ticket, incoming: AsyncIterator[bytes], cls: Any, what: str) -> Any:
    """The stream's first message, which must be its spec."""
    try:
        raw = await ticket.read(incoming, f"the {what}")
    except StopAsyncIteration:
        raise RequestError(f"the stream ended before its {what}") from None
    m = messages.decode(raw, cls)
    if m.kind != "spec":
        raise RequestError(f"the first message of the stream must be a {what}, not a {m.kind}")
    return m.value


async def _handoff_header(ticket: Ticket, incoming: AsyncIterator[bytes], rx: handoff.HandoffReceiver) -> int:
    """The hand-off's header, checked against this agent before any tensor byte is read; returns its step."""
    try:
        # The first agent is still denoising: only the stream's deadline bounds this wait.
        raw = await ticket.read(incoming, "the hand-off", idle=False)
    except StopAsyncIteration:
        raise StreamError("the stream ended before the hand-off") from None
    m = messages.decode(raw, spb.DenoiseRequest)
    if m.kind != "handoff":
        raise StreamError(f"a resumed Denoise stream needs a hand-off header after its spec, not a {m.kind}")
    ticket.begin()
    # HandoffReceiver allocates every tensor the header announces at once: charge that before it does.
    ticket.hold(int(m.value.total_bytes))
    rx.on_header(m.value)
    return int(m.value.next_step)


async def _handoff_body(ticket: Ticket, incoming: AsyncIterator[bytes], rx: handoff.HandoffReceiver
                        ) -> handoff.Handoff:
    """The rest of a hand-off, checked as it arrives."""
    async for raw in ticket.messages(incoming, "the rest of the hand-off"):
        m = messages.decode(raw, spb.DenoiseRequest)
        if m.kind == "chunk":
            rx.on_chunk(m.value)
        elif m.kind == "trailer":
            rx.on_trailer(m.value)
            break
        else:
            raise StreamError(f"unexpected {m.kind} message inside a hand-off")
    return rx.finish()

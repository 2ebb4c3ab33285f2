"""Split: part of a job (Denoise: some steps, a hand-off in or out) or one half of a CFG-parallel job.

The job runs in split/stages.py on a worker thread holding the engine (one job at a time),
fed from the stream by split/inbound.py; this servicer translates messages and maps errors.
A hand-off is received whole before the engine is taken, so the sending agent is free as
soon as its bytes are out, and with a queue the two stages of consecutive jobs overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import torch

from artifex_agent.config import AgentConfig
from artifex_agent.engines.generation import FPS, GenerationEngine, GenerationRequest
from artifex_agent.engines.models import resolve_model
from artifex_agent.errors import RequestError
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.proto.artifex.v1 import split_pb2 as spb
from artifex_agent.services.activity import Activity
from artifex_agent.services.admission import Admission, Limits, Ticket
from artifex_agent.services.errors import streaming_with_error_event
from artifex_agent.services.generate import to_engine_request
from artifex_agent.services.pump import Pump
from artifex_agent.split import cfg as cfg_split
from artifex_agent.split import handoff, inbound, messages, stages
from artifex_agent.split.denoise import Pass
from artifex_agent.transport import wire
from artifex_agent.transport.clips import ClipStream

logger = logging.getLogger(__name__)

# Stage-2 calls wait for the engine in these threads while earlier jobs run.
WORKERS = 4
_ROLES: dict[int, Pass] = {spb.CFG_ROLE_COND: "cond", spb.CFG_ROLE_UNCOND: "uncond"}


def _error_event(status: pb.ErrorStatus) -> bytes:
    # DenoiseEvent and CfgEvent number `error` alike (wire.ERROR): one encoding serves both.
    return messages.denoise_event(error=status)


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

    def _request(self, request: pb.GenerateRequest) -> GenerationRequest:
        req = to_engine_request(request, self.cfg)
        self.engine.validate(req)
        if req.task != "t2v":
            raise RequestError("split jobs run text-to-video only; run image-to-video jobs whole (split none)")
        return req

    def _prefetch(self, model: str) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().run_in_executor(self.executor, self.engine.load, model)
        # A failed load fails again, with its message, when the job takes the engine.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        return future

    @streaming_with_error_event(_error_event)
    def Denoise(self, request_iterator: AsyncIterable[bytes],
                context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        return self.admitted("Denoise", self.denoise_events, request_iterator)

    @streaming_with_error_event(_error_event)
    def CfgPeer(self, request_iterator: AsyncIterable[bytes],
                context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        return self.admitted("CfgPeer", self.cfg_events, request_iterator)

    async def admitted(self, method: str, run: Callable[[AsyncIterator[bytes], Ticket], AsyncGenerator[bytes, None]],
                       request_iterator: AsyncIterable[bytes]) -> AsyncGenerator[bytes, None]:
        """`run`'s messages under the stream's admission ticket (the RPCs, and split/local.py in process)."""
        with self.admission.stream(method) as ticket:
            # Closed here, not later by the garbage collector: the worker is told to stop at once.
            async with contextlib.aclosing(run(aiter(request_iterator), ticket)) as events:
                async for event in events:
                    yield event

    async def denoise_events(self, incoming: AsyncIterator[bytes], ticket: Ticket) -> AsyncGenerator[bytes, None]:
        started = time.monotonic()
        spec: spb.DenoiseSpec = await inbound.read_spec(ticket, incoming, spb.DenoiseRequest, "DenoiseSpec")
        req = self._request(spec.request)
        if not spec.resume:
            ticket.begin()  # a resumed stream begins with its hand-off (inbound.handoff_header)
        fingerprint = await asyncio.to_thread(stages.fingerprint, self.engine, req.model)
        with self.activity.track("denoise", spec.request.job_id):
            got = None
            loading = None
            if spec.resume:
                # Load the model while the other agent still runs the first steps.
                loading = self._prefetch(req.model)
                rx = handoff.HandoffReceiver(request=spec.request, fingerprint=fingerprint)
                next_step = await inbound.handoff_header(ticket, incoming, rx)
                # The client holds the tensors back until the header is accepted (split/streams.py).
                yield wire.encode_progress(pb.Progress(current_stage=pb.STAGE_ACCEPTED, step=next_step,
                                                       total=req.steps))
                got = await inbound.handoff_body(ticket, incoming, rx)
            yield wire.encode_progress(pb.Progress(current_stage=pb.STAGE_QUEUED, message=f"model {req.model}"))
            if loading is not None:
                # Not beside the load: both import from diffusers, whose first import is not thread-safe
                # ("cannot import name ... from 'diffusers'", seen as INTERNAL on a fresh agent).
                await asyncio.wait({loading})
            experts = await asyncio.to_thread(stages.experts_needed, self.engine, req, spec,
                                              got.state.next_step if got is not None else 0)
            pump: Pump[stages.Handed] = Pump(started)
            work = functools.partial(stages.denoise_part, self.engine, req, spec, got, fingerprint, experts,
                                     cancel=pump.cancel, report=pump.on_step, on_preview=pump.on_preview)
            async with contextlib.aclosing(pump.run(self.executor, work)) as events:
                async for event in events:
                    yield event
            header, tensors = pump.result()
            if header is None:
                async for message in self._output(req, spec.request, tensors[0], started):
                    yield message
                return
            yield wire.encode_progress(pb.Progress(current_stage=pb.STAGE_HANDOFF, step=header.next_step,
                                                   total=header.total_steps, elapsed_s=time.monotonic() - started))
            for message in handoff.encode(header, tensors, self.chunk_bytes):
                yield message
            logger.info("job %s: handed off after step %d of %d (%d bytes)", spec.request.job_id or "-",
                        header.next_step, header.total_steps, header.total_bytes)

    async def cfg_events(self, incoming: AsyncIterator[bytes], ticket: Ticket) -> AsyncGenerator[bytes, None]:
        started = time.monotonic()
        spec: spb.CfgSpec = await inbound.read_spec(ticket, incoming, spb.CfgRequest, "CfgSpec")
        ticket.begin()
        cfg_split.check_guidance(spec.request.guidance_scale or 1.0)
        role = _ROLES.get(spec.role)
        if role is None:
            raise RequestError("a CFG-parallel half needs a role: COND or UNCOND")
        req = self._request(spec.request)
        fingerprint = await asyncio.to_thread(stages.fingerprint, self.engine, req.model)
        pump: Pump[torch.Tensor] = Pump(started)
        inbox = inbound.PeerInbox(req.model, pump.cancel)
        work = functools.partial(stages.cfg_half, self.engine, req, role, fingerprint, inbox, emit=pump.emit,
                                 chunk_bytes=self.chunk_bytes, cancel=pump.cancel, report=pump.on_step,
                                 on_preview=pump.on_preview)
        with self.activity.track("cfg", spec.request.job_id):
            yield wire.encode_progress(pb.Progress(current_stage=pb.STAGE_QUEUED,
                                                   message=f"model {req.model}, {role} pass"))
            # Predictions come as fast as the peer's GPU steps: the deadline bounds this, PEER_TIMEOUT_S each step.
            reader = asyncio.ensure_future(inbox.feed(ticket.messages(incoming, "the peer's prediction", idle=False)))
            try:
                async with contextlib.aclosing(pump.run(self.executor, work)) as events:
                    async for event in events:
                        yield event
            finally:
                reader.cancel()
            latents = pump.result()
            logger.info("job %s: %s half done, %d prediction bytes received", spec.request.job_id or "-", role,
                        inbox.peer.bytes)
            if spec.emit_output:
                async for message in self._output(req, spec.request, latents, started):
                    yield message

    async def _output(self, req: GenerationRequest, request: pb.GenerateRequest, latents: torch.Tensor,
                      started: float) -> AsyncIterator[bytes]:
        """The job's output, as a Generate stream sends it: latents, or frames decoded here."""
        fps = FPS[resolve_model(self.engine.models_root, req.model).kind]
        rgb = None
        if req.output != "latent":
            yield wire.encode_progress(pb.Progress(current_stage=pb.STAGE_DECODE, elapsed_s=time.monotonic() - started))
            rgb = await asyncio.get_running_loop().run_in_executor(self.executor, self.engine.decode, req.model,
                                                                   latents)
        clip = ClipStream(fps=fps, model=request.model, latents=None if rgb is not None else latents.numpy(), rgb=rgb,
                          width=request.width, height=request.height, chunk_bytes=self.chunk_bytes)
        for message in clip.messages(started, lambda nbytes: self.activity.count_frames("sent", 1, nbytes)):
            yield message

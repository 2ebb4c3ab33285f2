"""PostProcess: a spec and a frame stream in; upscaled, encoded MP4s out.

Frames are upscaled and encoded a few at a time in a worker thread while the next ones
arrive, so peak memory is a few frames plus the encoder, whatever the clip's length. Every
frame byte held (received, queued, being upscaled) is charged to the agent-wide budget
(services/admission.py), and the whole request is checked before any folder is made.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from artifex_agent.config import AgentConfig
from artifex_agent.engines.models import check_name_length
from artifex_agent.engines.paths import confined_path, safe_output_path
from artifex_agent.engines.post import Encoding, PostJob
from artifex_agent.engines.upscale import Upscaler, check_output_size, frames_per_batch
from artifex_agent.errors import NotFoundError, RequestError, StreamError
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.proto.artifex.v1 import agent_pb2_grpc
from artifex_agent.services.activity import Activity
from artifex_agent.services.admission import Admission, Limits, Ticket
from artifex_agent.services.errors import streaming_with_error_event
from artifex_agent.services.post_source import source_messages
from artifex_agent.split.decode import LatentDecoder
from artifex_agent.transport import frames, wire
from artifex_agent.wire_enums import CODEC, VIDEO_ENCODER, post_codec, post_encoder

logger = logging.getLogger(__name__)

# Frames handed to the worker at once (fewer for large outputs), and batches waiting for it: bounds memory.
BATCH_FRAMES = 4
QUEUE_BATCHES = 2


def check_spec(spec: pb.PostSpec, cfg: AgentConfig) -> Path | None:
    """Validate a spec without touching the output folder; returns the upscale model's path (or None)."""
    if spec.upscale > 8:
        raise RequestError(f"upscale factor {spec.upscale} is outside 1..8")
    frames.check_fps(spec.fps, "spec fps")
    post_codec(spec), post_encoder(spec)  # an unknown enum value: RequestError naming the choices
    if spec.crf > 63:
        raise RequestError(f"crf {spec.crf} is outside 0..63")
    if spec.encode:
        if not spec.output_name:
            raise RequestError("output_name is required when encoding")
        # The name's rules, checked before any frame is sent (a refusal while the client writes can
        # reach it as INTERNAL); nothing is created until the header is checked too (output_path).
        confined_path(cfg.output_root, spec.output_name)
    model = None
    if spec.upscale_model:
        check_name_length(spec.upscale_model, "upscale model name")
        model = confined_path(cfg.models_root / "upscale", spec.upscale_model)
        if not model.is_file():  # now, not once frames flow (see above)
            raise NotFoundError(f"upscale model {spec.upscale_model!r} is not in {cfg.models_root / 'upscale'}")
    return model


def output_path(spec: pb.PostSpec, cfg: AgentConfig) -> Path | None:
    """The final output path (its folders are created), or None when not encoding."""
    if not spec.encode:
        return None
    return safe_output_path(cfg.output_root, spec.output_name, suffix=".webm" if post_codec(spec) == "vp9" else ".mp4")


class PostProcessService(agent_pb2_grpc.PostProcessServicer):
    """Receives frames, checks them against header and trailer, upscales and encodes."""

    def __init__(self, cfg: AgentConfig, activity: Activity, engine: Any = None,
                 admission: Admission | None = None) -> None:
        self.cfg = cfg
        self.activity = activity
        # The GenerationEngine whose VAE decodes latent streams; None: RGB frames only.
        self.engine = engine
        self.admission = admission or Admission(Limits.of(cfg))

    @streaming_with_error_event(lambda status: pb.PostProcessEvent(error=status))
    async def PostProcess(self, request_iterator: AsyncIterable[bytes],
                          context: grpc.aio.ServicerContext) -> AsyncIterator[pb.PostProcessEvent]:
        with self.admission.stream("PostProcess") as ticket:
            # Closed here, not later by the garbage collector: the worker and any temporary file go first.
            async with contextlib.aclosing(self._post(aiter(request_iterator), ticket)) as events:
                async for event in events:
                    yield event

    async def _post(self, messages: AsyncIterator[bytes], ticket: Ticket) -> AsyncGenerator[pb.PostProcessEvent, None]:
        start = time.monotonic()
        first = await _next(ticket, messages, "the spec")
        if first.kind != "spec" or first.spec is None:
            raise RequestError("the first message of a PostProcess stream must be a PostSpec")
        spec = first.spec
        model = check_spec(spec, self.cfg)
        if spec.source_path:
            # A post-only job: the frames come from the inputs root, read here, not from the client.
            messages = source_messages(self.cfg, spec.source_path, spec.fps)
        # The header may be long in coming: the upstream agent is still generating.
        second = await _next(ticket, messages, "the stream header", idle=False)
        if second.kind != "header" or second.header is None:
            raise StreamError("the second message of a PostProcess stream must be the stream header")
        receiver = frames.FrameReceiver(max_frames=self.cfg.max_frames * self.cfg.max_batch, budget=ticket)
        receiver.on_header(second.header)
        header = second.header
        decoder = None
        if header.kind == frames.LATENT:
            decoder = LatentDecoder(self.engine, header)
            header = decoder.rgb_header()
        elif header.kind != frames.RGB24:
            raise RequestError("this agent post-processes RGB24 frames or latents")
        out_w, out_h = check_output_size(header.width, header.height, header.frame_count, spec.upscale or 1)
        ticket.begin()
        # Only now, with spec and header checked, may the output's folders be made.
        output = output_path(spec, self.cfg)
        loop = asyncio.get_running_loop()
        # One worker thread per call: batches reach the encoder in order, off the event loop.
        worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="post")
        try:
            job = await new_job(spec, header, model, output, self.cfg, ticket, worker)
            with self.activity.track("post", spec.job_id):
                yield pb.PostProcessEvent(progress=pb.Progress(current_stage=pb.STAGE_RECEIVE,
                                                               total=header.frame_count))
                try:
                    async for event in self._run(ticket.messages(messages, "the next frame"), receiver, header,
                                                 decoder, job, worker, start,
                                                 frames_per_batch(out_w, out_h, BATCH_FRAMES)):
                        yield event
                except BaseException:
                    # Client gone, bad frame, failed encode: no .part and no half result stays behind.
                    await asyncio.shield(loop.run_in_executor(worker, job.abort))
                    raise
        finally:
            worker.shutdown(wait=False)

    async def _run(self, messages: AsyncIterator[bytes], receiver: frames.FrameReceiver, header: pb.StreamHeader,
                   decoder: LatentDecoder | None, job: PostJob, worker: ThreadPoolExecutor, start: float,
                   per_batch: int) -> AsyncIterator[pb.PostProcessEvent]:
        """Frames (decoded here when latents arrive) in batches to `job` on `worker`, progress out."""
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Future[None]] = set()
        batch: list[np.ndarray] = []
        last_report = 0.0

        async def submit(frames_: list[np.ndarray]) -> None:
            # Bounded pipeline: at most QUEUE_BATCHES batches wait for the worker.
            while len(pending) >= QUEUE_BATCHES:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for f in done:
                    pending.discard(f)
                    f.result()
            pending.add(loop.run_in_executor(worker, job.process, frames_))

        async for raw in messages:
            msg = wire.decode(raw, first_field="spec")
            if msg.kind == "chunk":
                assert msg.payload is not None
                completed = 0
                for view in receiver.on_chunk(msg.payload):
                    completed += 1
                    decoded: list[np.ndarray] | np.ndarray  # a clip's frames (F, H, W, 3) from the decoder
                    if decoder is None:
                        decoded = [frames.as_rgb(view, header)]
                    else:
                        decoded = await loop.run_in_executor(worker, decoder.decode, view)
                        # The latent is done with; its frames are what this stream holds now.
                        job.budget.hold(sum(f.nbytes for f in decoded))
                        job.budget.release(view.nbytes)
                    for frame in decoded:
                        batch.append(frame)
                        if len(batch) == per_batch:
                            await submit(batch)
                            batch = []
                self.activity.count_frames("received", completed, len(msg.payload))
                now = time.monotonic()
                if now - last_report > 0.25:
                    last_report = now
                    yield pb.PostProcessEvent(progress=pb.Progress(
                        current_stage=pb.STAGE_POST, step=job.frames_done, total=header.frame_count,
                        elapsed_s=now - start))
            elif msg.kind == "trailer":
                assert msg.trailer is not None
                receiver.on_trailer(msg.trailer)
            else:
                raise StreamError(f"unexpected {msg.kind} message inside the frame stream")
        receiver.finish()
        if batch:
            await submit(batch)
        for f in list(pending):
            await f
        receive_s = time.monotonic() - start
        await loop.run_in_executor(worker, job.finish)
        yield pb.PostProcessEvent(result=post_result(job, receiver.bytes, receive_s))


async def new_job(spec: pb.PostSpec, header: pb.StreamHeader, model: Path | None, output: Path | None,
                  cfg: AgentConfig, budget: Ticket, worker: ThreadPoolExecutor) -> PostJob:
    """The PostJob for `spec` over RGB frames as `header` describes them, its upscaler loaded on `worker`."""
    upscaler = await asyncio.get_running_loop().run_in_executor(worker, lambda: Upscaler(
        spec.upscale or 1, model, device=cfg.device, dtype=cfg.dtype))
    clips = header.clip_count or 1
    encoding = Encoding(output, spec.fps or header.fps or 16.0, post_codec(spec), post_encoder(spec),
                        crf=spec.crf or 18, preset=spec.preset, split_clips=spec.split_clips and clips > 1)
    return PostJob(upscaler, header.width, header.height, header.frame_count // clips, encoding, budget)


def post_result(job: PostJob, payload_bytes: int, receive_s: float) -> pb.PostResult:
    """What a finished post job produced (payload_bytes: what crossed the link, 0 in process)."""
    ow, oh = job.out_size()
    enc = job.results[0] if job.results else None
    return pb.PostResult(
        output_paths=[str(r.path) for r in job.results],
        output_bytes=sum(r.bytes for r in job.results),
        frames=job.frames_done, width=ow, height=oh,
        video_codec=CODEC.to_pb(enc.codec) if enc else pb.CODEC_UNSPECIFIED,
        video_encoder=VIDEO_ENCODER.to_pb(enc.encoder) if enc else pb.VIDEO_ENCODER_UNSPECIFIED,
        sha256=[r.sha256 for r in job.results],
        receive_s=receive_s, upscale_s=job.upscale_s, encode_s=job.encode_s, payload_bytes=payload_bytes,
    )


async def _next(ticket: Ticket, messages: AsyncIterator[bytes], what: str, *, idle: bool = True) -> wire.Message:
    try:
        raw = await ticket.read(messages, what, idle=idle)
    except StopAsyncIteration:
        raise StreamError(f"stream ended before {what}") from None
    return wire.decode(raw, first_field="spec")

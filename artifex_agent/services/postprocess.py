"""PostProcess: a spec and a frame stream in; upscaled, encoded MP4s out.

Frames are upscaled and encoded a few at a time in a worker thread while the next ones
arrive, so peak memory is a few frames plus the encoder, whatever the clip's length.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import grpc
import numpy as np

from artifex_agent.config import AgentConfig
from artifex_agent.engines.encode import EncodeResult, VideoEncoder
from artifex_agent.engines.paths import confined_path, safe_output_path
from artifex_agent.engines.upscale import Upscaler
from artifex_agent.errors import RequestError, StreamError
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.proto.artifex.v1 import agent_pb2_grpc
from artifex_agent.services.activity import Activity
from artifex_agent.services.errors import streaming
from artifex_agent.split.decode import LatentDecoder
from artifex_agent.transport import frames, wire

logger = logging.getLogger(__name__)

# Frames handed to the worker at once, and batches waiting for it: bounds memory.
BATCH_FRAMES = 4
QUEUE_BATCHES = 2
CODECS = ("h264", "hevc", "h265", "av1", "vp9")


def check_spec(spec: pb.PostSpec, cfg: AgentConfig) -> tuple[Path | None, Path | None]:
    """Validate a spec; returns (final output path or None when not encoding, upscale model path)."""
    if spec.upscale > 8:
        raise RequestError(f"upscale factor {spec.upscale} is outside 1..8")
    if spec.codec and spec.codec not in CODECS:
        raise RequestError(f"codec {spec.codec!r} is not one of {', '.join(CODECS)}")
    if spec.encoder and spec.encoder not in ("auto", "software", "nvenc"):
        raise RequestError(f"encoder {spec.encoder!r} is not auto, software or nvenc")
    if spec.crf > 63:
        raise RequestError(f"crf {spec.crf} is outside 0..63")
    model = None
    if spec.upscale_model:
        model = confined_path(cfg.models_root / "upscale", spec.upscale_model)
    output = None
    if spec.encode:
        if not spec.output_name:
            raise RequestError("output_name is required when encoding")
        output = safe_output_path(cfg.output_root, spec.output_name, suffix=".webm" if spec.codec == "vp9" else ".mp4")
    return output, model


@dataclass
class _Job:
    """The state of one PostProcess call, owned by the worker thread once frames flow."""

    spec: pb.PostSpec
    header: pb.StreamHeader
    output: Path | None
    upscaler: Upscaler
    per_clip: int
    encoders: list[VideoEncoder] = field(default_factory=list)
    results: list[EncodeResult] = field(default_factory=list)
    frames_done: int = 0
    upscale_s: float = 0.0
    encode_s: float = 0.0
    # A LatentDecoder when latents arrive (--decode-on post); None for RGB frames.
    decoder: Any = None

    def clip_path(self, clip: int) -> Path:
        assert self.output is not None
        if not self.spec.split_clips or (self.header.clip_count or 1) == 1:
            return self.output
        return self.output.with_name(f"{self.output.stem}_{clip}{self.output.suffix}")

    def process(self, batch: list[np.ndarray]) -> None:
        t0 = time.perf_counter()
        # Nothing to scale: hand the received frames on as they are (np.stack would copy them).
        out = batch if self.upscaler.name == "none" else self.upscaler(np.stack(batch))
        t1 = time.perf_counter()
        self.upscale_s += t1 - t0
        if self.output is not None:
            for frame in out:
                self._encoder_for(self.frames_done).write(frame)
                self.frames_done += 1
        else:
            self.frames_done += len(out)
        self.encode_s += time.perf_counter() - t1

    def _encoder_for(self, index: int) -> VideoEncoder:
        clip = index // self.per_clip if self.spec.split_clips else 0
        while len(self.encoders) <= clip:
            if self.encoders:
                self.results.append(self.encoders[-1].close())
            h, w = self.header.height, self.header.width
            ow, oh = self.upscaler.out_size(w, h)
            enc = VideoEncoder(self.clip_path(len(self.encoders)), ow, oh, self.spec.fps or self.header.fps or 16.0,
                               # check_spec() already limited codec and encoder to the allowed names.
                               codec=cast(Any, self.spec.codec or "h264"), crf=self.spec.crf or 18,
                               preset=self.spec.preset, encoder=cast(Any, self.spec.encoder or "auto"))
            self.encoders.append(enc)
        return self.encoders[clip]

    def finish(self) -> None:
        if self.encoders and len(self.results) < len(self.encoders):
            self.results.append(self.encoders[-1].close())

    def abort(self) -> None:
        for enc in self.encoders[len(self.results):]:
            enc.abort()
        # Outputs already renamed into place belong to a call that failed as a whole.
        for res in self.results:
            Path(res.path).unlink(missing_ok=True)


class PostProcessService(agent_pb2_grpc.PostProcessServicer):
    """Receives frames, checks them against header and trailer, upscales and encodes."""

    def __init__(self, cfg: AgentConfig, activity: Activity, engine: Any = None) -> None:
        self.cfg = cfg
        self.activity = activity
        # The GenerationEngine whose VAE decodes latent streams; None: RGB frames only.
        self.engine = engine

    @streaming
    async def PostProcess(self, request_iterator: AsyncIterable[bytes],
                          context: grpc.aio.ServicerContext) -> AsyncIterator[pb.PostProcessEvent]:
        start = time.monotonic()
        messages = aiter(request_iterator)
        first = await _next(messages, "spec")
        if first.kind != "spec" or first.spec is None:
            raise RequestError("the first message of a PostProcess stream must be a PostSpec")
        spec = first.spec
        output, model = check_spec(spec, self.cfg)
        second = await _next(messages, "header")
        if second.kind != "header" or second.header is None:
            raise StreamError("the second message of a PostProcess stream must be the stream header")
        receiver = frames.FrameReceiver(max_frames=self.cfg.max_frames * self.cfg.max_batch)
        receiver.on_header(second.header)
        header = second.header
        decoder = None
        if header.kind == frames.LATENT:
            decoder = LatentDecoder(self.engine, header)
            header = decoder.rgb_header()
        elif header.kind != frames.RGB24:
            raise RequestError("this agent post-processes RGB24 frames or latents")
        loop = asyncio.get_running_loop()
        # One worker thread per call: batches reach the encoder in order, off the event loop.
        worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="post")
        try:
            upscaler = await loop.run_in_executor(worker, lambda: Upscaler(
                spec.upscale or 1, model, device=self.cfg.device, dtype=self.cfg.dtype))
            job = _Job(spec, header, output, upscaler, per_clip=header.frame_count // (header.clip_count or 1),
                       decoder=decoder)
            with self.activity.track("post", spec.job_id):
                yield pb.PostProcessEvent(progress=pb.Progress(stage="receive", total=header.frame_count))
                try:
                    async for event in self._run(messages, receiver, job, worker, start):
                        yield event
                except BaseException:
                    # Client gone, bad frame, failed encode: no .part and no half result stays behind.
                    await asyncio.shield(loop.run_in_executor(worker, job.abort))
                    raise
        finally:
            worker.shutdown(wait=False)

    async def _run(self, messages: AsyncIterator[bytes], receiver: frames.FrameReceiver, job: _Job,
                   worker: ThreadPoolExecutor, start: float) -> AsyncIterator[pb.PostProcessEvent]:
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Future[None]] = set()
        batch: list[np.ndarray] = []
        header = job.header
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
                    decoded = [frames.as_rgb(view, header)] if job.decoder is None else \
                        await loop.run_in_executor(worker, job.decoder.decode, view)
                    for frame in decoded:
                        batch.append(frame)
                        if len(batch) == BATCH_FRAMES:
                            await submit(batch)
                            batch = []
                self.activity.count_frames("received", completed, len(msg.payload))
                now = time.monotonic()
                if now - last_report > 0.25:
                    last_report = now
                    yield pb.PostProcessEvent(progress=pb.Progress(
                        stage="post", step=job.frames_done, total=header.frame_count, elapsed_s=now - start))
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
        yield pb.PostProcessEvent(result=_result(job, receiver, receive_s))


def _result(job: _Job, receiver: frames.FrameReceiver, receive_s: float) -> pb.PostResult:
    ow, oh = job.upscaler.out_size(job.header.width, job.header.height)
    enc = job.results[0] if job.results else None
    return pb.PostResult(
        output_paths=[str(r.path) for r in job.results],
        output_bytes=sum(r.bytes for r in job.results),
        frames=job.frames_done, width=ow, height=oh,
        codec=enc.codec if enc else "", encoder=enc.encoder if enc else "",
        sha256=[r.sha256 for r in job.results],
        receive_s=receive_s, upscale_s=job.upscale_s, encode_s=job.encode_s, payload_bytes=receiver.bytes,
    )


async def _next(messages: AsyncIterator[bytes], what: str) -> wire.Message:
    try:
        raw = await anext(messages)
    except StopAsyncIteration:
        raise StreamError(f"stream ended before the {what}") from None
    return wire.decode(raw, first_field="spec")

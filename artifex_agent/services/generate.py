"""Generate: progress events while the pipeline runs, then the clip as a frame stream."""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import grpc

from artifex_agent.config import AgentConfig, ClusterConfig
from artifex_agent.delivery.deliverer import Deliverer
from artifex_agent.delivery.payload import Payload
from artifex_agent.delivery.split import check_plan, split_generation
from artifex_agent.engines.eta import CostHistory, EtaClock
from artifex_agent.engines.generation import GenerationEngine, GenerationRequest, GenerationResult
from artifex_agent.engines.paths import confined_path
from artifex_agent.errors import RequestError
from artifex_agent.jobspec import check_sampling
from artifex_agent.jobspec_pb import lora_refs_from_pb
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.proto.artifex.v1 import agent_pb2_grpc
from artifex_agent.services.activity import Activity
from artifex_agent.services.admission import Admission, Limits
from artifex_agent.services.errors import streaming
from artifex_agent.services.pump import Pump
from artifex_agent.split.local import LocalSplit
from artifex_agent.transport import wire
from artifex_agent.transport.clips import ClipStream

logger = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 32 << 20


def to_engine_request(request: pb.GenerateRequest, cfg: AgentConfig) -> GenerationRequest:
    """Translate the wire request, loading an i2v image from bytes or a confined path."""
    # An unspecified task with an image means i2v: the image would otherwise be ignored.
    i2v = request.task == pb.TASK_I2V or (request.task == pb.TASK_UNSPECIFIED and bool(request.image or
                                                                                    request.image_path))
    task: Literal["t2v", "i2v"] = "i2v" if i2v else "t2v"
    loras = tuple(lora_refs_from_pb(request.loras))
    shift = request.shift if request.HasField("shift") and request.shift else None
    boundary = request.boundary_ratio if request.HasField("boundary_ratio") and request.boundary_ratio else None
    check_sampling(loras, request.scheduler, shift or 0.0, boundary or 0.0)
    image = None
    if task == "i2v":
        image = _load_image(request, cfg)
    return GenerationRequest(
        model=request.model,
        prompts=list(request.prompts),
        task=task,
        negative_prompt=request.negative_prompt,
        width=request.width,
        height=request.height,
        num_frames=request.num_frames,
        steps=request.steps,
        guidance_scale=request.guidance_scale or 1.0,
        guidance_scale_2=request.guidance_scale_2 or None,
        seed=request.seed,
        seeds=list(request.seeds) or None,
        image=image,
        output="latent" if request.output == pb.PAYLOAD_KIND_LATENT else "rgb",
        loras=loras,
        scheduler=request.scheduler,
        shift=shift,
        boundary_ratio=boundary,
        preview_every=request.preview_every,
    )


def _load_image(request: pb.GenerateRequest, cfg: AgentConfig) -> Any:
    from PIL import Image, UnidentifiedImageError

    if request.image and request.image_path:
        raise RequestError("give the i2v image as bytes or as image_path, not both")
    if request.image_path:
        path = confined_path(cfg.inputs_root, request.image_path)
        if not path.is_file():
            raise RequestError(f"image {request.image_path!r} is not a file under the inputs folder")
        data = path.read_bytes()
    elif request.image:
        data = request.image
    else:
        raise RequestError("i2v needs an image (bytes in the request or image_path under the inputs folder)")
    if len(data) > MAX_IMAGE_BYTES:
        raise RequestError(f"image is {len(data)} bytes; the limit is {MAX_IMAGE_BYTES}")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format not in ("PNG", "JPEG", "WEBP"):
                raise RequestError(f"image format {img.format} is not PNG, JPEG or WEBP")
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise RequestError(f"image cannot be read: {exc}") from None


def _post_cost_key(request: pb.DeliverRequest, post_agent: str) -> tuple[str, tuple[int, int, int]]:
    """What a Deliver's post-processing costs depends on: where, the upscale, the codec; the size and frames."""
    spec = request.deliveries[0].spec if request.deliveries else pb.PostSpec()
    gen = request.generate
    kind = f"post {post_agent or 'here'} x{spec.upscale or 1} codec {spec.video_codec}"
    return kind, (gen.width, gen.height, gen.num_frames * max(len(gen.prompts), 1))


class GenerateService(agent_pb2_grpc.GenerateServicer):
    """Runs one generation at a time on this agent's GPU and streams the result."""

    def __init__(self, engine: GenerationEngine, cfg: AgentConfig, activity: Activity, chunk_bytes: int = 0,
                 admission: Admission | None = None, deliverer: Deliverer | None = None,
                 local_split: LocalSplit | None = None) -> None:
        self.engine = engine
        self.cfg = cfg
        self.activity = activity
        self.chunk_bytes = chunk_bytes
        self.admission = admission or Admission(Limits.of(cfg))
        # Where Deliver sends its frames (the cluster file's agents, or this process).
        self.deliverer = deliverer or Deliverer(cfg, ClusterConfig(agents=[cfg]), activity, engine, chunk_bytes)
        # This agent's half of a split Deliver, called in process (split/local.py).
        self.local_split = local_split
        # Recent decode and post-processing times, for the time left (engines/eta.py); shared with the
        # engine, which records its decodes (an engine without one, such as a benchmark's ready clip, gets its own).
        self.costs: CostHistory = getattr(engine, "costs", None) or CostHistory()
        # The GPU runs one pipeline at a time; a single worker thread keeps torch off the event loop.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")

    @streaming
    async def Generate(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        with self.admission.stream("Generate") as ticket:
            ticket.begin()
            # A queued request keeps its i2v image (up to 32 MiB) while it waits for the GPU.
            ticket.hold(request.ByteSize())
            # A client that stops reading would keep the whole clip here: sending() ends it.
            async with contextlib.aclosing(ticket.sending(self._generate(request))) as messages:
                async for message in messages:
                    yield message

    @streaming
    async def Deliver(self, request: pb.DeliverRequest,
                      context: grpc.aio.ServicerContext) -> AsyncIterator[pb.DeliverEvent]:
        """Generate (or take the held frames) and post-process each delivery where it names; events back."""
        with self.admission.stream("Deliver") as ticket:
            post_agent = self.deliverer.post_agent(request)  # an unknown agent is refused before any work
            ticket.begin()
            job_id = request.generate.job_id
            split = request.split if request.HasField("split") and not request.reuse_held else None
            if split is not None:
                check_plan(split, request.generate, self.cfg, self.deliverer.peers)
            # The post-processing after the steps, at what this kind of delivery cost lately (time left).
            post_kind, size = _post_cost_key(request, post_agent)
            post_s = self.costs.predict(post_kind, *size) or 0.0
            if request.reuse_held:
                payload = self.deliverer.held.get(job_id)
            else:
                ticket.hold(request.generate.ByteSize())
                started = time.monotonic()
                made: list[Payload] = []
                if split is not None:
                    # Both halves from here; nothing made: the peer was lost, and the job runs whole below.
                    async with contextlib.aclosing(split_generation(
                            split, request.generate, name=self.cfg.name, local=self._local_split(),
                            peers=self.deliverer.peers, out=made)) as split_events:
                        async for event in split_events:
                            yield event
                if not made:
                    runs: list[Pump[GenerationResult]] = []
                    with self.activity.track("generate", job_id):
                        async with contextlib.aclosing(self._generation(request.generate, runs,
                                                                        after_s=post_s)) as events:
                            async for raw in events:
                                yield pb.DeliverEvent.FromString(raw)  # Progress is field 1 of both events
                        result, started = runs[0].result(), runs[0].started  # a failed generation fails in the tally
                    made.append(Payload(result.fps, result.model, request.generate.width, request.generate.height,
                                        rgb=result.frames,
                                        latents=None if result.latents is None else result.latents.numpy()))
                payload = made[0]
                self.deliverer.keep(job_id, payload)
                frame_count = payload.stream().header.frame_count
                yield pb.DeliverEvent(progress=pb.Progress(current_stage=pb.STAGE_STREAM, step=frame_count,
                                                           total=frame_count, elapsed_s=time.monotonic() - started))
            delivering = time.monotonic()
            async with contextlib.aclosing(self.deliverer.deliver(request, post_agent, payload, ticket)) as events:
                async for event in events:
                    yield event
            self.costs.record(post_kind, *size, time.monotonic() - delivering)

    def _local_split(self) -> LocalSplit:
        if self.local_split is None:
            raise RequestError("this agent does not run split jobs")
        return self.local_split

    async def _generation(self, request: pb.GenerateRequest, runs: list[Pump[GenerationResult]],
                          after_s: float = 0.0) -> AsyncGenerator[bytes, None]:
        """Progress events while the engine runs; then runs[0] holds its outcome.

        `after_s`: the work after generating that the caller knows of (a Deliver's post-processing).
        """
        req = to_engine_request(request, self.cfg)
        self.engine.validate(req)
        pump: Pump[GenerationResult] = Pump()
        # After the last step: the decode, at what it cost lately here (0 until one ran, or latents out).
        decode = self.costs.predict("decode", req.width, req.height, req.num_frames * len(req.prompts))
        pump.eta = EtaClock(((decode or 0.0) if req.output == "rgb" else 0.0) + after_s)
        runs.append(pump)
        yield wire.encode_progress(pb.Progress(current_stage=pb.STAGE_QUEUED, message=f"model {req.model}"))
        work = functools.partial(self.engine.generate, req, on_step=pump.on_step, cancel=pump.cancel,
                                 on_preview=pump.on_preview)
        async with contextlib.aclosing(pump.run(self.executor, work)) as events:
            async for event in events:
                yield event

    async def _generate(self, request: pb.GenerateRequest) -> AsyncGenerator[bytes, None]:
        runs: list[Pump[GenerationResult]] = []
        with self.activity.track("generate", request.job_id):
            async with contextlib.aclosing(self._generation(request, runs)) as events:
                async for event in events:
                    yield event
            pump = runs[0]
            result = pump.result()
            clip = ClipStream(fps=result.fps, model=result.model, chunk_bytes=self.chunk_bytes,
                              latents=None if result.latents is None else result.latents.numpy(), rgb=result.frames,
                              width=request.width, height=request.height)
            for message in clip.messages(pump.started, lambda nbytes: self.activity.count_frames("sent", 1, nbytes)):
                yield message
            logger.info("job %s: streamed %d frames (%d bytes)", request.job_id or "-", clip.sender.frames,
                        clip.sender.bytes)

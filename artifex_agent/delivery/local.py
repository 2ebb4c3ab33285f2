"""Post-process a delivery in this process: the generated frames go to engines/post.PostJob as they are.

No serialisation and no socket: the frames are views into the generated array. Each batch
is charged to the stream's budget before it is processed (PostJob releases it), the same
bound a PostProcess stream has; latents are decoded here one clip at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from artifex_agent.config import AgentConfig
from artifex_agent.delivery.payload import Payload
from artifex_agent.engines.upscale import check_output_size, frames_per_batch
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.services.activity import Activity
from artifex_agent.services.admission import Ticket
from artifex_agent.services.postprocess import BATCH_FRAMES, check_spec, new_job, output_path, post_result
from artifex_agent.split.decode import LatentDecoder

# (progress of this delivery's post stage)
OnProgress = Callable[[pb.Progress], None]


async def post_in_process(part: Payload, spec: pb.PostSpec, *, cfg: AgentConfig, engine: Any, ticket: Ticket,
                          activity: Activity, on_progress: OnProgress) -> pb.PostResult:
    """Upscale and encode `part` here; nothing is left behind when it fails."""
    start = time.monotonic()
    model = check_spec(spec, cfg)
    header = part.stream().header
    decoder = LatentDecoder(engine, header) if part.latents is not None else None
    rgb = decoder.rgb_header() if decoder is not None else header
    out_w, out_h = check_output_size(rgb.width, rgb.height, rgb.frame_count, spec.upscale or 1)
    output = output_path(spec, cfg)
    clips = part.clips
    loop = asyncio.get_running_loop()
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="post")
    try:
        job = await new_job(spec, rgb, model, output, cfg, ticket, worker)
        per_batch = frames_per_batch(out_w, out_h, BATCH_FRAMES)
        with activity.track("post", spec.job_id):
            on_progress(pb.Progress(current_stage=pb.STAGE_RECEIVE, total=rgb.frame_count))
            try:
                for c in range(clips):
                    if decoder is not None:
                        latent = np.ascontiguousarray(part.array[c])
                        clip = await loop.run_in_executor(worker, decoder.decode, latent.data.cast("B"))
                    else:
                        clip = part.array[c]
                    for batch in _batches(clip, per_batch):
                        # Charged here, released by PostJob.process once written.
                        ticket.hold(sum(f.nbytes for f in batch))
                        await loop.run_in_executor(worker, job.process, batch)
                        on_progress(pb.Progress(current_stage=pb.STAGE_POST, step=job.frames_done,
                                                total=rgb.frame_count, elapsed_s=time.monotonic() - start))
                await loop.run_in_executor(worker, job.finish)
            except BaseException:
                await asyncio.shield(loop.run_in_executor(worker, job.abort))
                raise
        return post_result(job, 0, time.monotonic() - start)
    finally:
        worker.shutdown(wait=False)


def _batches(clip: np.ndarray, per_batch: int) -> Iterator[list[np.ndarray]]:
    for i in range(0, len(clip), per_batch):
        yield list(clip[i:i + per_batch])

"""Post-only jobs at the coordinator: a frame folder or video on the shared cache, upscaled and encoded.

The job names its input by a path relative to the post agents' inputs root (JobSpec.post_input,
checked against traversal like any name); the chosen agent reads the frames itself
(PostSpec.source_path), so no frame passes through the coordinator. The run holds its agent
as posting; its result or failure is recorded by the scheduler as any run's (run_ends.py), so a
dead agent is marked down and the job retried on another post-capable agent like any job.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from artifex_agent.coordinator import routing
from artifex_agent.coordinator.batching import QueueEntry
from artifex_agent.coordinator.split_runs import Host
from artifex_agent.jobspec import JobSpec
from artifex_agent.jobspec_pb import post_spec
from artifex_agent.transport.post_call import post_process

logger = logging.getLogger(__name__)


def is_post_only(spec: JobSpec) -> bool:
    return bool(spec.post_input)


async def start(sched: Host, entry: QueueEntry) -> bool:
    """Start the job on a free post-capable agent (True: started, or waiting for one)."""
    spec = entry.job.spec
    free = [a for a in sched.pool if a.can_post(spec) and a.idle]
    if not free:
        return True
    # The agent of an earlier attempt first (a re-run overwrites its own output), then post-preferring ones.
    post = routing.choose_post(free, spec, free[0], entry.job.post_agent)
    if post is None:
        return True
    run = await sched.begin_one(entry, post, post, f"post-processing {spec.post_input} on {post.name}")
    if run is None:
        return True  # cancelled while it was being recorded
    post.posting += 1
    run.gen_released, run.posting = True, True  # the scheduler's _forget releases the posting count
    sched.launch(run, lambda r: work(sched, r), f"post-{entry.job.id}")
    return True


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield  # pragma: no cover - makes this an async generator


async def work(sched: Host, run: Any) -> list[Any]:
    """PostProcess with the spec alone: the agent reads the frames itself."""
    job = run.entries[0].job
    spec = post_spec(job.spec, job.spec.output or f"jobs/{job.id}", job_id=job.id, split_clips=False)
    return [await post_process(run.post.stub, run.post.name, spec, _nothing(),
                               on_progress=lambda _source, p: sched.progress(run, None, "post", p))]

"""Run one batch: one Generate call for all its prompts, one PostProcess call per job.

A single job goes through relay.generate_and_post unchanged. A batch of several jobs is
split on the way: the Generate stream's chunks are forwarded byte for byte, but each job
gets a stream of its own (header, its clips' frames, a trailer with its own checksum), so
each job's output is named after the job and can succeed or fail on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import grpc
import xxhash

from artifex_agent.coordinator.messages import Job
from artifex_agent.errors import StreamError
from artifex_agent.jobspec_pb import generate_request as job_request
from artifex_agent.jobspec_pb import post_spec
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.relay import RemoteError, generate_and_post
from artifex_agent.transport import frames, wire
from artifex_agent.transport.channel import AgentStub
from artifex_agent.transport.post_call import post_process

logger = logging.getLogger(__name__)

# (index of the job in the batch or None for all of them, source "generate"/"post", progress)
BatchProgress = Callable[[int | None, str, pb.Progress], None]
# Messages waiting for one post agent: bounds the coordinator's memory to a few frames.
_QUEUE_MESSAGES = 4


def output_name(job: Job) -> str:
    """Where a job's output goes: its own name, or one derived from its id (the same on every re-run)."""
    return job.spec.output or f"jobs/{job.id}"


def generate_request(jobs: list[Job], batch_id: str) -> pb.GenerateRequest:
    """One request for every prompt of every job, each clip with its own job's seed."""
    first = jobs[0].spec
    if len(jobs) == 1:
        return job_request(first, job_id=jobs[0].id)
    prompts = [p for job in jobs for p in job.spec.prompts]
    request = job_request(first, job_id=batch_id, prompts=prompts)
    request.seeds.extend(job.spec.seed + i for job in jobs for i in range(len(job.spec.prompts)))
    return request


async def run_batch(gen: AgentStub, post: AgentStub, jobs: list[Job], batch_id: str, on_progress: BatchProgress,
                    *, gen_name: str, post_name: str) -> list[pb.PostResult | BaseException]:
    """Each job's PostResult, or the error that stopped it; errors of the Generate call are raised."""
    request = generate_request(jobs, batch_id)
    if len(jobs) == 1:
        spec = post_spec(jobs[0].spec, output_name(jobs[0]), job_id=jobs[0].id)
        relay = await generate_and_post(gen, post, request, spec, lambda s, p: on_progress(None, s, p),
                                        gen_name=gen_name, post_name=post_name)
        return [relay.result]
    return await _split_relay(gen, post, request, jobs, on_progress, gen_name, post_name)


class _JobStream:
    """The sub-stream of one job: a queue feeding its PostProcess call, and its trailer's tally."""

    def __init__(self, index: int, spec: pb.PostSpec, header: pb.StreamHeader) -> None:
        self.index = index
        self.spec = spec
        self.header = header
        self.expected = header.frame_count * header.frame_bytes
        self.bytes = 0
        self.hash = xxhash.xxh3_64()
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(_QUEUE_MESSAGES)
        self.task: asyncio.Task[pb.PostResult] | None = None

    async def messages(self) -> AsyncIterator[bytes]:
        """Header, chunks and trailer (post_process sends the spec before them)."""
        yield wire.encode_header(self.header)
        while (raw := await self.queue.get()) is not None:
            yield raw

    async def put(self, item: bytes | None) -> None:
        """Queue a message for the post call; dropped once that call has ended (it failed: nothing reads)."""
        try:
            self.queue.put_nowait(item)
            return
        except asyncio.QueueFull:
            pass
        assert self.task is not None
        if self.task.done():
            return
        putter = asyncio.ensure_future(self.queue.put(item))
        await asyncio.wait({putter, self.task}, return_when=asyncio.FIRST_COMPLETED)
        putter.cancel()

    async def finish(self) -> None:
        trailer = pb.StreamTrailer(frame_count=self.header.frame_count, total_bytes=self.bytes,
                                   checksum=self.hash.hexdigest())
        await self.put(wire.encode_trailer(trailer))
        await self.put(None)


async def _split_relay(gen: AgentStub, post: AgentStub, request: pb.GenerateRequest, jobs: list[Job],
                       on_progress: BatchProgress, gen_name: str,
                       post_name: str) -> list[pb.PostResult | BaseException]:
    clips = [len(job.spec.prompts) for job in jobs]
    specs = [post_spec(job.spec, output_name(job), job_id=job.id) for job in jobs]
    streams: list[_JobStream] = []
    receiver = frames.FrameReceiver()
    gen_call = gen.generate(request)

    async def post_one(stream: _JobStream) -> pb.PostResult:
        return await post_process(post, post_name, stream.spec, stream.messages(),
                                  on_progress=lambda _, p: on_progress(stream.index, "post", p))

    def open_stream(header: pb.StreamHeader) -> _JobStream:
        i = len(streams)
        per_clip = header.frame_count // (header.clip_count or 1)
        sub = pb.StreamHeader()
        sub.CopyFrom(header)
        sub.frame_count, sub.clip_count = per_clip * clips[i], clips[i]
        stream = _JobStream(i, specs[i], sub)
        stream.task = asyncio.create_task(post_one(stream), name=f"post-{jobs[i].id}")
        streams.append(stream)
        return stream

    current: _JobStream | None = None
    try:
        async for raw in gen_call:
            msg = wire.decode(raw, first_field="progress")
            if msg.kind == "chunk":
                assert msg.payload is not None and current is not None
                receiver.on_chunk(msg.payload)
                if current.bytes + msg.payload.nbytes > current.expected:
                    raise StreamError("a chunk crosses the boundary between two jobs' clips")
                current.hash.update(msg.payload)
                current.bytes += msg.payload.nbytes
                await current.put(raw)
                if current.bytes == current.expected:
                    # Sent before the whole stream's trailer is checked: if that check fails
                    # later, every job of the batch is failed (and re-run) all the same.
                    await current.finish()
                    current = open_stream(receiver.header) if len(streams) < len(jobs) else None  # type: ignore[arg-type]
            elif msg.kind == "progress":
                assert msg.progress is not None
                on_progress(None, "generate", msg.progress)
            elif msg.kind == "header":
                assert msg.header is not None
                receiver.on_header(msg.header)
                if (msg.header.clip_count or 1) != sum(clips):
                    raise StreamError(f"agent sent {msg.header.clip_count} clips for {sum(clips)} prompts")
                current = open_stream(msg.header)
            elif msg.kind == "trailer":
                assert msg.trailer is not None
                receiver.on_trailer(msg.trailer)
        receiver.finish()
    except grpc.aio.AioRpcError as exc:
        await _abandon(streams)
        raise RemoteError(gen_name, exc.code(), exc.details() or "") from None
    except BaseException:
        await _abandon(streams)
        raise
    finally:
        gen_call.cancel()
    return list(await asyncio.gather(*(s.task for s in streams if s.task), return_exceptions=True))


async def _abandon(streams: list[_JobStream]) -> None:
    """Stop every post call: an unverified stream must not become an output."""
    for stream in streams:
        if stream.task is not None:
            stream.task.cancel()
    for stream in streams:
        if stream.task is not None:
            with contextlib.suppress(BaseException):
                await stream.task

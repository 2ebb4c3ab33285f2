"""The Jobs gRPC service: a thin layer over the job queue's operations."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from artifex_agent.coordinator.jobs import MAX_PAGE_BYTES, JobQueue
from artifex_agent.coordinator.messages import (
    event_to_pb,
    job_to_pb,
    jobs_page,
    page_after,
    spec_from_pb,
    state_from_pb,
)
from artifex_agent.proto.artifex.v1 import jobs_pb2 as jpb
from artifex_agent.proto.artifex.v1 import jobs_pb2_grpc
from artifex_agent.services.errors import streaming, unary


class JobsService(jobs_pb2_grpc.JobsServicer):
    """Submit, Get, List, Watch, Cancel and Retry."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue

    @unary
    async def Submit(self, request: jpb.SubmitRequest, context: grpc.aio.ServicerContext) -> jpb.SubmitReply:
        # Every problem in one INVALID_ARGUMENT, the agents' own size rules and models included.
        spec = spec_from_pb(request.spec, self.queue.agents)
        job, existed = await self.queue.submit(spec, request.idempotency_key)
        return jpb.SubmitReply(job_id=job.id, existing=existed, job=job_to_pb(job))

    @unary
    async def Get(self, request: jpb.GetJobRequest, context: grpc.aio.ServicerContext) -> jpb.Job:
        return job_to_pb(await self.queue.get(request.job_id))

    @unary
    async def List(self, request: jpb.ListJobsRequest, context: grpc.aio.ServicerContext) -> jpb.ListJobsReply:
        states = [state_from_pb(s) for s in request.states]
        rows, more = await self.queue.page(states, request.page_size, page_after(request.page_token))
        return jobs_page(rows, more, MAX_PAGE_BYTES)

    @streaming
    async def Watch(self, request: jpb.WatchRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[jpb.JobEvent]:
        async for event in self.queue.watch(request.job_id, request.history):
            if event.snapshot:
                # A watcher that joins mid-run is shown the picture so far at once, not at the next preview.
                event = self.queue.scheduler.bus.with_preview(event)
            yield event_to_pb(event)

    @unary
    async def Cancel(self, request: jpb.CancelRequest, context: grpc.aio.ServicerContext) -> jpb.Job:
        return job_to_pb(await self.queue.cancel(request.job_id))

    @unary
    async def Retry(self, request: jpb.RetryRequest, context: grpc.aio.ServicerContext) -> jpb.Job:
        return job_to_pb(await self.queue.retry(request.job_id))

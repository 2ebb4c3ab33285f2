"""Run one batch: one Deliver call to the generating agent, which hands each job's frames to the post agent.

The coordinator names the post agent (by its name in the cluster file) and gets progress and
one result per job back; the frames go from agent to agent (or stay inside one agent) and
never pass through here. Each job succeeds or fails on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc

from artifex_agent.coordinator.messages import Job
from artifex_agent.errors import StreamError
from artifex_agent.jobspec_pb import generate_request as job_request
from artifex_agent.jobspec_pb import post_spec
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.transport.channel import AgentStub
from artifex_agent.transport.post_call import RemoteError, status_code

logger = logging.getLogger(__name__)

# (index of the job in the batch or None for all of them, source "generate"/"post", progress)
BatchProgress = Callable[[int | None, str, pb.Progress], None]


class DeliveryFailed(RemoteError):
    """One job's post stage failed on `agent`; `held`: the generating agent still holds its frames."""

    def __init__(self, agent: str, code: grpc.StatusCode, details: str, *, held: bool, gen: str,
                 request: pb.DeliverRequest, index: int) -> None:
        super().__init__(agent, code, details)
        self.held = held
        self.gen = gen
        # What to send again (reuse_held, only=[index]) to retry the post stage without generating.
        self.request = request
        self.index = index


class HeldFramesGone(StreamError):
    """A post stage retried from held frames found them gone: the job is generated again."""


def output_name(job: Job) -> str:
    """Where a job's output goes: its own name, or one derived from its id (the same on every re-run)."""
    return job.spec.output or f"jobs/{job.id}"


def generate_request(jobs: list[Job], batch_id: str) -> pb.GenerateRequest:
    """One request for every prompt of every job, each clip with its own job's seed."""
    first = jobs[0].spec
    # --decode-on post: latents go to the post agent, which decodes them with the model's VAE.
    output = pb.PAYLOAD_KIND_LATENT if first.decode_on == "post" else pb.PAYLOAD_KIND_RGB24
    if len(jobs) == 1:
        return job_request(first, job_id=jobs[0].id, output=output)
    prompts = [p for job in jobs for p in job.spec.prompts]
    request = job_request(first, job_id=batch_id, prompts=prompts, output=output)
    request.seeds.extend(job.spec.seed + i for job in jobs for i in range(len(job.spec.prompts)))
    return request


def deliver_request(jobs: list[Job], batch_id: str, post_name: str,
                    split: pb.SplitPlan | None = None) -> pb.DeliverRequest:
    """The batch's generation (`split`: shared with a peer) and one delivery per job to `post_name`."""
    return pb.DeliverRequest(
        generate=generate_request(jobs, batch_id), post_agent=post_name, split=split,
        deliveries=[pb.Delivery(spec=post_spec(job.spec, output_name(job), job_id=job.id),
                                clips=len(job.spec.prompts)) for job in jobs])


def retry_request(failed: DeliveryFailed, post_name: str) -> pb.DeliverRequest:
    """`failed`'s delivery again, from the frames its generating agent holds, to `post_name`."""
    request = pb.DeliverRequest()
    request.CopyFrom(failed.request)
    request.reuse_held, request.post_agent = True, post_name
    request.ClearField("only")
    request.only.append(failed.index)
    return request


async def run_batch(gen: AgentStub, jobs: list[Job], batch_id: str, on_progress: BatchProgress, *, gen_name: str,
                    post_name: str, retry: DeliveryFailed | None = None,
                    split: pb.SplitPlan | None = None) -> list[pb.PostResult | BaseException]:
    """Each job's PostResult, or the error that stopped it (`retry`: one job's post stage from held frames).

    `split`: the generation is shared with the plan's peer, driven by `gen` (split_runs.py).
    """
    if retry is not None:
        request = retry_request(retry, post_name)
    else:
        request = deliver_request(jobs, batch_id, post_name, split)
    # Indexes of the request's deliveries -> positions in `jobs`.
    indexes = [retry.index] if retry is not None else list(range(len(jobs)))
    position = {index: i for i, index in enumerate(indexes)}
    results: list[pb.PostResult | BaseException | None] = [None] * len(jobs)
    call = gen.deliver(request)
    try:
        async for event in call:
            which = event.WhichOneof("event")
            if which == "progress":
                on_progress(None, "generate", event.progress)
            elif which == "post_progress" and event.post_progress.index in position:
                on_progress(position[event.post_progress.index], "post", event.post_progress.progress)
            elif which == "result" and event.result.index in position:
                results[position[event.result.index]] = _outcome(event.result, gen_name, request)
    except grpc.aio.AioRpcError as exc:
        if retry is not None and exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
            gone: BaseException = HeldFramesGone(f"{gen_name} no longer holds the frames; generating them again")
        else:
            gone = RemoteError(gen_name, exc.code(), exc.details() or "")
        # The generating agent failed: every job without a result fails with it.
        return [gone if r is None else r for r in results]
    finally:
        call.cancel()
    lost = RemoteError(gen_name, grpc.StatusCode.UNKNOWN, "the Deliver stream ended without this job's result")
    return [lost if r is None else r for r in results]


def _outcome(result: pb.DeliveryResult, gen_name: str, request: pb.DeliverRequest) -> pb.PostResult | BaseException:
    if result.WhichOneof("outcome") == "result":
        return result.result
    return DeliveryFailed(result.post_agent, status_code(result.error.code), result.error.message, held=result.held,
                          gen=gen_name, request=request, index=result.index)

"""Run inside a rig namespace: ask an agent to generate and Deliver to a post agent; report how it ended.

    python -m tests.netns.deliver_client ADDRESS TOKEN POST_AGENT MODELS... [--size WxH] [--frames N]

Prints `streaming` (flushed) when the first event of the post agent arrives, so a test can
break the link while the frames flow, then one JSON line: the outcome and the seconds since
`streaming`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import grpc

from artifex_agent.jobspec import JobSpec
from artifex_agent.jobspec_pb import generate_request, post_spec
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.transport.channel import AgentStub, open_channel


def _code_name(number: int) -> str:
    return next((c.name for c in grpc.StatusCode if c.value[0] == number), str(number))


async def deliver(args: argparse.Namespace) -> dict[str, object]:
    w, h = (int(x) for x in args.size.split("x"))
    job = JobSpec(prompts=["a fox on a cut cable"], model=args.model, width=w, height=h, frames=args.frames, steps=1,
                  guidance=1.0, fps=8.0, upscale=args.upscale, seed=11)
    request = pb.DeliverRequest(generate=generate_request(job, job_id=args.job_id), post_agent=args.post_agent)
    request.deliveries.add(spec=post_spec(job, f"deliver/{args.job_id}", job_id=args.job_id), clips=1)
    out: dict[str, object] = {"ok": False, "code": "", "message": "", "after_streaming_s": None}
    streaming_at: float | None = None
    channel = open_channel(args.address)
    try:
        async for event in AgentStub(channel, args.token).deliver(request, timeout=args.timeout):
            if event.HasField("post_progress") and streaming_at is None:
                streaming_at = time.monotonic()
                print("streaming", flush=True)
            if event.HasField("result"):
                outcome = event.result
                if outcome.HasField("error"):
                    out.update(code=_code_name(outcome.error.code), message=outcome.error.message,
                               held=outcome.held)
                else:
                    out.update(ok=True, frames=outcome.result.frames)
    except grpc.aio.AioRpcError as exc:
        out.update(ok=False, code=exc.code().name, message=exc.details() or "")
    finally:
        await channel.close()
    if streaming_at is not None:
        out["after_streaming_s"] = time.monotonic() - streaming_at
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("address")
    p.add_argument("token")
    p.add_argument("post_agent")
    p.add_argument("model")
    p.add_argument("--size", default="256x256")
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--upscale", type=int, default=1)
    p.add_argument("--job-id", default="deliver-client")
    p.add_argument("--timeout", type=float, default=300.0, help="the client's own deadline: far beyond the agent's")
    args = p.parse_args()
    print(json.dumps(asyncio.run(deliver(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A Deliver's generation split with a peer agent: both halves driven from here, the output made here.

The agent that gets the Deliver is the one whose half ends in the output (experts: the
low-noise steps and the decode; cfg: the conditional passes and the decode), so the frames
are delivered from here without travelling again. Its own half runs in process
(split/local.py); the peer's through the cluster file's channel. What moves between the two
is the expert hand-off (once) or the per-step noise predictions, directly, never through
the caller. A lost peer is not the job's end: the caller gets a STAGE_FAILOVER progress and
the whole job runs here (services/generate.py); anything else fails the Deliver with the
status the failing agent gave.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator

from artifex_agent.config import AgentConfig
from artifex_agent.delivery.payload import Payload
from artifex_agent.delivery.remote import Peers
from artifex_agent.errors import RequestError
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.split.cfg import check_guidance
from artifex_agent.split.client import MODES, run_split
from artifex_agent.split.local import LocalSplit
from artifex_agent.split.streams import AgentLost, Peer

logger = logging.getLogger(__name__)


def check_plan(plan: pb.SplitPlan, request: pb.GenerateRequest, cfg: AgentConfig, peers: Peers) -> None:
    """Refuse a plan that cannot run, before any work: unknown mode or peer, the peer being this agent."""
    if plan.mode not in MODES or plan.mode == "none":
        raise RequestError(f"split mode {plan.mode!r} is not experts or cfg")
    if not plan.peer or plan.peer == cfg.name:
        raise RequestError("a split names another agent of the cluster file as its peer")
    peers.config(plan.peer)  # refused when the cluster file has no such agent
    if plan.mode == "cfg":
        check_guidance(request.guidance_scale or 1.0)


async def split_generation(plan: pb.SplitPlan, request: pb.GenerateRequest, *, name: str, local: LocalSplit,
                           peers: Peers, out: list[Payload]) -> AsyncGenerator[pb.DeliverEvent, None]:
    """Progress of both halves; then out[0] is the output. Nothing in `out`: the peer was lost, run it whole."""
    agents: dict[str, Peer] = {name: local, plan.peer: peers.stub(plan.peer)}
    # The agent making the output is this one: second for experts, first (conditional) for cfg.
    first, second = (plan.peer, name) if plan.mode == "experts" else (name, plan.peer)
    progress: asyncio.Queue[pb.Progress] = asyncio.Queue()

    def on_progress(agent: str, p: pb.Progress) -> None:
        if p.current_stage not in (pb.STAGE_SPLIT, pb.STAGE_FAILOVER) and agent != name:
            p.message = f"{agent}: {p.message}" if p.message else agent
        progress.put_nowait(p)

    task = asyncio.ensure_future(run_split(agents, request, plan.mode, generate_on=first,  # type: ignore[arg-type]
                                           other=second, on_progress=on_progress, failover=False))
    try:
        while not task.done() or not progress.empty():
            getter = asyncio.ensure_future(progress.get())
            await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield pb.DeliverEvent(progress=getter.result())
            else:
                getter.cancel()
    finally:
        task.cancel()  # the caller went away: both halves stop
    error = task.exception()
    if isinstance(error, AgentLost) and error.agent == plan.peer:
        message = f"{plan.peer} lost ({error.code.name}: {error.details}); running the whole job on {name}"
        logger.warning("job %s: %s", request.job_id or "-", message)
        yield pb.DeliverEvent(progress=pb.Progress(current_stage=pb.STAGE_FAILOVER, message=message))
        return
    if error is not None:
        raise error
    output = task.result().output
    assert output is not None  # collected: run_split had no post agent
    h = output.header
    latents = None if output.latents is None else output.latents.numpy()
    out.append(Payload(h.fps, h.model or request.model, request.width, request.height, rgb=output.frames,
                       latents=latents))

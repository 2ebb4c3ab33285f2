"""One Deliver call after generation: each delivery post-processed here or on its named agent, in order.

Each delivery succeeds or fails on its own; its result (or error) goes back to the caller
with whether the generated frames are still held for a retry (held.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from typing import Any

from artifex_agent.config import AgentConfig, ClusterConfig
from artifex_agent.delivery.held import HeldPayloads
from artifex_agent.delivery.local import post_in_process
from artifex_agent.delivery.payload import Payload, cut
from artifex_agent.delivery.remote import Peers, post_remotely
from artifex_agent.errors import RequestError
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.services.activity import Activity
from artifex_agent.services.admission import Ticket
from artifex_agent.services.errors import status_and_message
from artifex_agent.transport.post_call import RemoteError

logger = logging.getLogger(__name__)


class Deliverer:
    """What a Deliver needs besides generation: the peers, the held payloads, the post engines."""

    def __init__(self, cfg: AgentConfig, cluster: ClusterConfig, activity: Activity, engine: Any = None,
                 chunk_bytes: int = 0) -> None:
        self.cfg = cfg
        self.activity = activity
        self.engine = engine
        self.chunk_bytes = chunk_bytes
        self.peers = Peers(cluster)
        self.held = HeldPayloads(cfg.hold_mib << 20, cfg.hold_s)

    def post_agent(self, request: pb.DeliverRequest) -> str:
        """The post agent's name, "" for this process; refuses what cannot be delivered, before any work."""
        if not request.deliveries:
            raise RequestError("a Deliver names at least one delivery")
        if len(request.deliveries) > self.cfg.max_batch:
            raise RequestError(f"{len(request.deliveries)} deliveries; this agent takes at most {self.cfg.max_batch}")
        if any(i >= len(request.deliveries) for i in request.only):
            raise RequestError(f"`only` names a delivery outside 0..{len(request.deliveries) - 1}")
        if request.reuse_held and not request.generate.job_id:
            raise RequestError("reuse_held needs the job_id the frames were generated under")
        name = request.post_agent
        if not name or name == self.cfg.name:
            return ""
        self.peers.config(name)
        return name

    def keep(self, job_id: str, payload: Payload) -> None:
        """Hold the payload for a retry of its post stage; forgotten after hold_s."""
        if self.held.put(job_id, payload):
            asyncio.get_running_loop().call_later(self.held.hold_s, self.held.prune)

    async def deliver(self, request: pb.DeliverRequest, post_agent: str, payload: Payload,
                      ticket: Ticket) -> AsyncGenerator[pb.DeliverEvent, None]:
        """Results (and post progress) of each delivery asked for."""
        parts = cut(payload, [d.clips for d in request.deliveries])
        wanted = set(request.only) or set(range(len(parts)))
        job_id = request.generate.job_id
        ok = True
        where = post_agent or self.cfg.name
        for index, (delivery, part) in enumerate(zip(request.deliveries, parts, strict=True)):
            if index not in wanted:
                continue
            progress: asyncio.Queue[pb.Progress] = asyncio.Queue()
            task = asyncio.ensure_future(self._post(post_agent, part, delivery.spec, ticket, progress.put_nowait))
            try:
                while not task.done() or not progress.empty():
                    getter = asyncio.ensure_future(progress.get())
                    await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                    if getter.done():
                        yield pb.DeliverEvent(post_progress=pb.DeliveryProgress(index=index, progress=getter.result()))
                    else:
                        getter.cancel()
            finally:
                task.cancel()  # the caller went away: stop this delivery's post stage too
            result = pb.DeliveryResult(index=index, post_agent=where)
            error = task.exception()
            if error is None:
                result.result.CopyFrom(task.result())
            else:
                ok = False
                result.error.CopyFrom(_status(error, where))
            if ok and index == max(wanted):
                self.held.drop(job_id)  # all delivered: nothing to retry
            result.held = self.held.has(job_id)
            yield pb.DeliverEvent(result=result)

    async def _post(self, post_agent: str, part: Payload, spec: pb.PostSpec, ticket: Ticket,
                    on_progress: Any) -> pb.PostResult:
        if not post_agent:
            return await post_in_process(part, spec, cfg=self.cfg, engine=self.engine, ticket=ticket,
                                         activity=self.activity, on_progress=on_progress)
        return await post_remotely(self.peers.stub(post_agent), post_agent, part, spec, chunk_bytes=self.chunk_bytes,
                                   timeout=self.cfg.stream_deadline_s, activity=self.activity,
                                   on_progress=on_progress)

    async def close(self) -> None:
        await self.peers.close()


def _status(exc: BaseException, where: str) -> pb.ErrorStatus:
    """A failed delivery's status: the post agent's own, or this agent's (logged) for an error here."""
    if isinstance(exc, RemoteError):
        return pb.ErrorStatus(code=exc.code.value[0], message=exc.details)
    code, message = status_and_message(exc, f"Deliver to {where}")
    return pb.ErrorStatus(code=code.value[0], message=message)

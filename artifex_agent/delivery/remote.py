"""Deliver to another agent: by its name in this agent's cluster file, over one PostProcess stream.

Never an address from a request. The channel carries the cluster's token and TLS like any
client's, and keepalive (transport/options.py), so a receiver that dies or drops off the
link ends the call with UNAVAILABLE instead of leaving this agent waiting; the call's
deadline (stream_deadline_s) bounds a receiver that stays up but stops reading.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import grpc

from artifex_agent.config import AgentConfig, ClusterConfig
from artifex_agent.delivery.payload import Payload
from artifex_agent.errors import RequestError
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.services.activity import Activity
from artifex_agent.transport.channel import AgentStub, open_channel
from artifex_agent.transport.post_call import post_process


class Peers:
    """Channels to the other agents of the cluster file, opened on first use and kept."""

    def __init__(self, cluster: ClusterConfig) -> None:
        self.cluster = cluster
        self._channels: dict[str, grpc.aio.Channel] = {}

    def config(self, name: str) -> AgentConfig:
        """The agent called `name`; RequestError (INVALID_ARGUMENT) when the cluster file has none."""
        for agent in self.cluster.agents:
            if agent.name == name:
                return agent
        raise RequestError(f"no agent {name} in the cluster file")

    def stub(self, name: str) -> AgentStub:
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = open_channel(self.config(name).dial_address, self.cluster.security)
        # Read per call: SIGHUP may have replaced the token.
        return AgentStub(channel, self.cluster.security.secrets.token)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


async def post_remotely(stub: AgentStub, name: str, part: Payload, spec: pb.PostSpec, *, chunk_bytes: int,
                        timeout: float, activity: Activity,
                        on_progress: Callable[[pb.Progress], None]) -> pb.PostResult:
    """Stream `part` to agent `name` with `spec`; its result, or RemoteError naming it."""
    stream = part.stream(chunk_bytes)

    async def upstream() -> AsyncIterator[bytes]:
        messages = stream.messages(time.monotonic(), lambda nbytes: activity.count_frames("sent", 1, nbytes))
        next(messages)  # the "stream" progress event: Deliver reports that once for the whole batch
        for message in messages:
            yield message

    return await post_process(stub, name, spec, upstream(), on_progress=lambda _, p: on_progress(p), timeout=timeout)

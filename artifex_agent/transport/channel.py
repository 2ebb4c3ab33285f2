"""Client channels with the tuned options, credentials and token, and stubs built from transport/methods.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from artifex_agent.config import SecurityConfig
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.transport import methods, options
from artifex_agent.transport.security import call_metadata, channel_credentials


def open_channel(address: str, security: SecurityConfig | None = None) -> grpc.aio.Channel:
    """An aio channel to `address` with the options both ends share."""
    security = security or SecurityConfig()
    creds = channel_credentials(security)
    opts = list(options.CHANNEL_OPTIONS)
    if creds is not None:
        # Certificates name the agent, not the address a test or a PC dials.
        opts.append(("grpc.ssl_target_name_override", "artifex-agent"))
        return grpc.aio.secure_channel(address, creds, options=opts)
    return grpc.aio.insecure_channel(address, options=opts)


@dataclass
class AgentStub:
    """Typed calls to one agent; bulk streams are raw bytes both ways (see transport.wire)."""

    channel: grpc.aio.Channel
    token: str = ""

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return call_metadata(self.token)

    def generate(self, request: pb.GenerateRequest, timeout: float | None = None) -> Any:
        """Server stream of raw GenerateEvent messages (decode with wire.decode)."""
        return methods.GENERATE.multicallable(self.channel)(request, metadata=self.metadata, timeout=timeout)

    def deliver(self, request: pb.DeliverRequest, timeout: float | None = None) -> Any:
        """Server stream of DeliverEvent: the agent generates and hands the frames on itself."""
        return methods.DELIVER.multicallable(self.channel)(request, metadata=self.metadata, timeout=timeout)

    def post_process(self, requests: Any, timeout: float | None = None) -> Any:
        """Bidirectional: raw PostProcessRequest messages in, PostProcessEvent out."""
        return methods.POST_PROCESS.multicallable(self.channel)(requests, metadata=self.metadata, timeout=timeout)

    async def info(self, timeout: float | None = 5.0) -> pb.AgentInfo:
        return await methods.INFO.multicallable(self.channel)(pb.InfoRequest(), metadata=self.metadata, timeout=timeout)

    def echo(self, timeout: float | None = None) -> Any:
        return methods.ECHO.multicallable(self.channel)(metadata=self.metadata, timeout=timeout)

    def download(self, total_bytes: int, chunk_bytes: int, timeout: float | None = None) -> Any:
        """Raw BandwidthChunk messages from the agent."""
        return methods.DOWNLOAD.multicallable(self.channel)(
            pb.BandwidthRequest(total_bytes=total_bytes, chunk_bytes=chunk_bytes), metadata=self.metadata,
            timeout=timeout)

    def upload(self, requests: Any, timeout: float | None = None) -> Any:
        """Send raw BandwidthChunk messages; returns the agent's count and time."""
        return methods.UPLOAD.multicallable(self.channel)(requests, metadata=self.metadata, timeout=timeout)

    async def probe(self, request: pb.ProbeRequest, timeout: float | None = None) -> pb.ProbeResult:
        """Have the agent measure the link to a peer agent (RTT, bandwidth, clock)."""
        return await methods.PROBE.multicallable(self.channel)(request, metadata=self.metadata, timeout=timeout)

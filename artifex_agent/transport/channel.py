"""Client channels with the tuned options, credentials and token, and raw-bytes stubs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from artifex_agent.config import SecurityConfig
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.transport import options
from artifex_agent.transport.security import call_metadata, channel_credentials

GENERATE = "/artifex.v1.Generate/Generate"
POST_PROCESS = "/artifex.v1.PostProcess/PostProcess"
INFO = "/artifex.v1.Diagnostics/Info"
ECHO = "/artifex.v1.Diagnostics/Echo"
DOWNLOAD = "/artifex.v1.Diagnostics/Download"
UPLOAD = "/artifex.v1.Diagnostics/Upload"
PROBE = "/artifex.v1.Diagnostics/Probe"


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
        call = self.channel.unary_stream(GENERATE, request_serializer=pb.GenerateRequest.SerializeToString)
        return call(request, metadata=self.metadata, timeout=timeout)

    def post_process(self, requests: Any, timeout: float | None = None) -> Any:
        """Bidirectional: raw PostProcessRequest messages in, PostProcessEvent out."""
        call = self.channel.stream_stream(POST_PROCESS, response_deserializer=pb.PostProcessEvent.FromString)
        return call(requests, metadata=self.metadata, timeout=timeout)

    async def info(self, timeout: float | None = 5.0) -> pb.AgentInfo:
        call = self.channel.unary_unary(INFO, request_serializer=pb.InfoRequest.SerializeToString,
                                        response_deserializer=pb.AgentInfo.FromString)
        return await call(pb.InfoRequest(), metadata=self.metadata, timeout=timeout)

    def echo(self, timeout: float | None = None) -> Any:
        call = self.channel.stream_stream(ECHO, request_serializer=pb.EchoMessage.SerializeToString,
                                          response_deserializer=pb.EchoMessage.FromString)
        return call(metadata=self.metadata, timeout=timeout)

    def download(self, total_bytes: int, chunk_bytes: int, timeout: float | None = None) -> Any:
        """Raw BandwidthChunk messages from the agent."""
        call = self.channel.unary_stream(DOWNLOAD, request_serializer=pb.BandwidthRequest.SerializeToString)
        return call(pb.BandwidthRequest(total_bytes=total_bytes, chunk_bytes=chunk_bytes),
                    metadata=self.metadata, timeout=timeout)

    def upload(self, requests: Any, timeout: float | None = None) -> Any:
        """Send raw BandwidthChunk messages; returns the agent's count and time."""
        call = self.channel.stream_unary(UPLOAD, response_deserializer=pb.BandwidthResult.FromString)
        return call(requests, metadata=self.metadata, timeout=timeout)

    async def probe(self, request: pb.ProbeRequest, timeout: float | None = None) -> pb.ProbeResult:
        """Have the agent measure the link to a peer agent (RTT, bandwidth, clock)."""
        call = self.channel.unary_unary(PROBE, request_serializer=pb.ProbeRequest.SerializeToString,
                                        response_deserializer=pb.ProbeResult.FromString)
        return await call(request, metadata=self.metadata, timeout=timeout)

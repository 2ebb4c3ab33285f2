"""Diagnostics: what this agent has (GPU, models, encoders) and echo streams for the link."""

from __future__ import annotations

import asyncio
import platform
import socket
import time
from collections.abc import AsyncIterable, AsyncIterator

import grpc

from artifex_agent import PROTOCOL_VERSION, __version__
from artifex_agent.config import AgentConfig
from artifex_agent.engines import gpu
from artifex_agent.engines.encode import available_encoders
from artifex_agent.engines.models import list_models
from artifex_agent.errors import RequestError
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.proto.artifex.v1 import agent_pb2_grpc
from artifex_agent.services.activity import Activity
from artifex_agent.services.errors import streaming, unary
from artifex_agent.transport import options, wire

MAX_BANDWIDTH_BYTES = 64 << 30
MAX_ECHO_PAYLOAD = 1 << 20


def torch_versions() -> tuple[str, str]:
    import torch

    return torch.__version__, torch.version.cuda or ""


class DiagnosticsService(agent_pb2_grpc.DiagnosticsServicer):
    """Answers Info, and the echo/bandwidth streams `artifex-agent health` measures with."""

    def __init__(self, cfg: AgentConfig, activity: Activity) -> None:
        self.cfg = cfg
        self.activity = activity

    @unary
    async def Info(self, request: pb.InfoRequest, context: grpc.aio.ServicerContext) -> pb.AgentInfo:
        return await asyncio.to_thread(self.info)

    def info(self) -> pb.AgentInfo:
        gpus, problem = gpu.gpu_info()
        torch_v, cuda_v = torch_versions()
        return pb.AgentInfo(
            name=self.cfg.name, protocol_version=PROTOCOL_VERSION, version=__version__,
            hostname=socket.gethostname(), platform=platform.platform(),
            gpus=[pb.GpuInfo(**g) for g in gpus], gpu_problem=problem,
            models=[pb.ModelInfo(name=m.name, kind=m.kind, complete=m.complete, problem=m.problem,
                                 two_experts=m.two_experts) for m in list_models(self.cfg.models_root)],
            encoders=available_encoders(), roles=list(self.cfg.roles),
            torch_version=torch_v, cuda_version=cuda_v, time_unix=time.time(),
            active_streams=self.activity.count,
        )

    async def Echo(self, request_iterator: AsyncIterable[pb.EchoMessage],
                   context: grpc.aio.ServicerContext) -> AsyncIterator[pb.EchoMessage]:
        async for message in request_iterator:
            if len(message.payload) > MAX_ECHO_PAYLOAD:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "echo payload over 1 MiB")
            yield message

    @streaming
    async def Download(self, request: pb.BandwidthRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        if not 0 < request.total_bytes <= MAX_BANDWIDTH_BYTES:
            raise RequestError(f"total_bytes must be within 1..{MAX_BANDWIDTH_BYTES}")
        chunk = min(request.chunk_bytes or options.DEFAULT_CHUNK_BYTES, options.MAX_MESSAGE_BYTES)
        message = wire.encode_bandwidth_chunk(bytes(chunk))
        left = request.total_bytes
        while left >= chunk:
            yield message
            left -= chunk
        if left:
            yield wire.encode_bandwidth_chunk(bytes(left))

    @unary
    async def Upload(self, request_iterator: AsyncIterable[bytes],
                     context: grpc.aio.ServicerContext) -> pb.BandwidthResult:
        total = 0
        start = None
        async for raw in request_iterator:
            if start is None:
                start = time.perf_counter()
            total += wire.bandwidth_payload_size(raw)
        return pb.BandwidthResult(bytes=total, seconds=time.perf_counter() - start if start else 0.0)

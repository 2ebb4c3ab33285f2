"""Diagnostics: what this agent has (GPU, models, encoders) and echo streams for the link."""

from __future__ import annotations

import asyncio
import platform
import socket
import time
from collections.abc import AsyncIterable, AsyncIterator

import grpc

from artifex_agent import PROTOCOL_VERSION, __version__
from artifex_agent.config import AgentConfig, ClusterConfig, is_loopback, split_hostport
from artifex_agent.engines import gpu, memplan
from artifex_agent.engines.encode import available_encoders
from artifex_agent.engines.models import ModelEntry, list_models, size_rules
from artifex_agent.errors import ArtifexError, ConfigError, RequestError
from artifex_agent.health import link
from artifex_agent.health.system import interface_for
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.proto.artifex.v1 import agent_pb2_grpc
from artifex_agent.services.activity import Activity
from artifex_agent.services.errors import streaming, unary
from artifex_agent.transport import options, wire
from artifex_agent.wire_enums import MODEL_KIND

MAX_BANDWIDTH_BYTES = 64 << 30
MAX_ECHO_PAYLOAD = 1 << 20
# Probe bounds: enough for any health run, not a way to keep an agent busy.
MAX_PROBE_ECHOES = 10_000
MAX_PROBE_SECONDS = 30.0


def torch_versions() -> tuple[str, str]:
    import torch

    return torch.__version__, torch.version.cuda or ""


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


class DiagnosticsService(agent_pb2_grpc.DiagnosticsServicer):
    """Answers Info, and the echo/bandwidth streams `artifex-agent health` measures with."""

    def __init__(self, cfg: AgentConfig, activity: Activity, cluster: ClusterConfig | None = None) -> None:
        self.cfg = cfg
        self.activity = activity
        # Probe dials peers with the cluster's credentials; without a cluster it is refused.
        self.cluster = cluster

    @unary
    async def Info(self, request: pb.InfoRequest, context: grpc.aio.ServicerContext) -> pb.AgentInfo:
        return await asyncio.to_thread(self.info)

    def info(self) -> pb.AgentInfo:
        gpus, problem = gpu.gpu_info()
        torch_v, cuda_v = torch_versions()
        iface = interface_for(split_hostport(self.cfg.dial_address)[0])
        return pb.AgentInfo(
            name=self.cfg.name, protocol_version=PROTOCOL_VERSION, version=__version__,
            hostname=socket.gethostname(), platform=platform.platform(),
            gpus=[pb.GpuInfo(**g) for g in gpus], gpu_problem=problem,
            models=[model_info(m, self.cfg, budget_bytes(self.cfg, gpus)) for m in list_models(self.cfg.models_root)],
            encoders=available_encoders(), roles=list(self.cfg.roles),
            torch_version=torch_v, cuda_version=cuda_v, time_unix=time.time(),
            active_streams=self.activity.count, cuda_available=cuda_available(),
            link_interface=iface.name if iface and not iface.loopback else "",
            link_mtu=iface.mtu if iface and not iface.loopback else 0,
        )

    async def Echo(self, request_iterator: AsyncIterable[pb.EchoMessage],
                   context: grpc.aio.ServicerContext) -> AsyncIterator[pb.EchoMessage]:
        async for message in request_iterator:
            if len(message.payload) > MAX_ECHO_PAYLOAD:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "echo payload over 1 MiB")
            # Our clock on the way back: health estimates clock skew from the fastest round trip.
            message.reply_unix = time.time()
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

    @unary
    async def Probe(self, request: pb.ProbeRequest, context: grpc.aio.ServicerContext) -> pb.ProbeResult:
        if self.cluster is None:
            raise RequestError("this agent has no cluster config to probe peers with")
        try:
            host, _ = split_hostport(request.address)
        except ConfigError as exc:
            raise RequestError(str(exc)) from None
        # Only peers of this cluster (or loopback): the token must not turn agents into scanners.
        peers = {split_hostport(a.dial_address)[0] for a in self.cluster.agents}
        peers |= {split_hostport(a.listen)[0] for a in self.cluster.agents}
        if host not in peers and not is_loopback(request.address):
            raise RequestError(f"{request.address} is not an agent of this cluster")
        if request.echo_count > MAX_PROBE_ECHOES or not 0 <= request.bandwidth_seconds <= MAX_PROBE_SECONDS:
            raise RequestError(f"probe asks too much (at most {MAX_PROBE_ECHOES} echoes, {MAX_PROBE_SECONDS:.0f} s)")
        return await link.probe_peer(request, self.cluster.security, self.cluster.security.secrets.token)


def model_info(m: ModelEntry, cfg: AgentConfig | None = None, budget: int = 0) -> pb.ModelInfo:
    """A model as Info lists it; a complete video model with its size rules, so the coordinator checks sizes,
    and (given the agent's settings) whether this agent's GPU can hold it, so the coordinator routes by it."""
    info = pb.ModelInfo(name=m.name, model_kind=MODEL_KIND.to_pb(m.kind), complete=m.complete,
                        problem=m.problem, two_experts=m.two_experts)
    if m.complete and m.kind != "upscale":
        try:
            rules = size_rules(m)
        except (TypeError, ValueError, IndexError):  # a malformed config: the agent refuses its jobs itself
            return info
        info.size_multiple, info.frame_step, info.max_positions = rules.spatial, rules.temporal, rules.max_positions
        if cfg is not None:
            info.hold_bytes = hold_bytes(m, cfg, rules.spatial)
            info.cannot_hold = not memplan.holds(info.hold_bytes, budget)
    return info


def budget_bytes(cfg: AgentConfig, gpus: list[dict[str, int | str]]) -> int:
    """What this agent plans with for holding a model: vram_budget_gib, else its card under the fraction (0: unknown).

    The card's total, not its free memory now: a model this agent has loaded must not make it look too small.
    """
    if cfg.vram_budget_gib:
        return int(cfg.vram_budget_gib * memplan.GiB)
    if cfg.device == "cpu" or not gpus:
        return 0
    total = int(gpus[0]["memory_total"])
    return int(total * cfg.gpu_memory_fraction) if cfg.gpu_memory_fraction else total


def hold_bytes(m: ModelEntry, cfg: AgentConfig, side: int) -> int:
    """Peak of the smallest job (one frame, side x side) with one expert resident, at the lightest storage allowed.

    "Resident" (none/model placements) because an expert streamed from the CPU layer by layer
    technically runs anywhere, too slowly to give a card that could not hold it. 0 when not planned.
    """
    import torch

    from artifex_agent.engines.generation import GenerationRequest, _quantized
    from artifex_agent.engines.placement import candidates
    from artifex_agent.engines.vram import JobPlanner

    offload = "model" if cfg.cpu_offload and cfg.offload == "auto" else cfg.offload
    try:
        allowed = candidates(offload, cfg.weight_storage, quantized=_quantized(m))
        resident = [p for p in allowed if p.policy in ("none", "model")] or allowed
        req = GenerationRequest(model=m.name, prompts=["x"], width=side, height=side, num_frames=1)
        plans = JobPlanner(torch.device("cpu"), torch.bfloat16).model_plan(m, req, resident, 0)
        return min(plans[p.fp8].estimate_for(p.policy).peak_bytes for p in resident)
    except (ArtifexError, OSError, ValueError, KeyError, TypeError):  # a folder the planner cannot read
        return 0

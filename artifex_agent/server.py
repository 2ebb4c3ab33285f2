"""The agent process: start the gRPC server, serve, shut down gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from artifex_agent.config import AgentConfig, ClusterConfig, default_home
from artifex_agent.engines import gpu
from artifex_agent.engines.generation import GenerationEngine
from artifex_agent.engines.paths import sweep_parts
from artifex_agent.errors import ConfigError
from artifex_agent.metrics import Metrics
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.services.activity import Activity
from artifex_agent.services.admission import Admission, Limits
from artifex_agent.services.diagnostics import DiagnosticsService
from artifex_agent.services.generate import GenerateService
from artifex_agent.services.guard import RequestGuard, UnknownMethods
from artifex_agent.services.postprocess import PostProcessService
from artifex_agent.services.split import SplitService
from artifex_agent.transport import options
from artifex_agent.transport.security import TokenInterceptor, check_bind_allowed, server_credentials

logger = logging.getLogger(__name__)

SERVICES = ("artifex.v1.Generate", "artifex.v1.PostProcess", "artifex.v1.Diagnostics", "artifex.v1.Split")


def _handlers(gen: GenerateService, post: PostProcessService, diag: DiagnosticsService) -> list[grpc.GenericRpcHandler]:
    # Registered by hand instead of add_*Servicer_to_server: bulk streams skip protobuf
    # (de)serialization (a None serializer passes raw bytes), see transport/wire.py.
    return [
        grpc.method_handlers_generic_handler("artifex.v1.Generate", {
            "Generate": grpc.unary_stream_rpc_method_handler(
                gen.Generate, request_deserializer=pb.GenerateRequest.FromString),
        }),
        grpc.method_handlers_generic_handler("artifex.v1.PostProcess", {
            "PostProcess": grpc.stream_stream_rpc_method_handler(
                post.PostProcess, response_serializer=pb.PostProcessEvent.SerializeToString),
        }),
        grpc.method_handlers_generic_handler("artifex.v1.Diagnostics", {
            "Info": grpc.unary_unary_rpc_method_handler(
                diag.Info, request_deserializer=pb.InfoRequest.FromString,
                response_serializer=pb.AgentInfo.SerializeToString),
            "Echo": grpc.stream_stream_rpc_method_handler(
                diag.Echo, request_deserializer=pb.EchoMessage.FromString,
                response_serializer=pb.EchoMessage.SerializeToString),
            "Download": grpc.unary_stream_rpc_method_handler(
                diag.Download, request_deserializer=pb.BandwidthRequest.FromString),
            "Upload": grpc.stream_unary_rpc_method_handler(
                diag.Upload, response_serializer=pb.BandwidthResult.SerializeToString),
            "Probe": grpc.unary_unary_rpc_method_handler(
                diag.Probe, request_deserializer=pb.ProbeRequest.FromString,
                response_serializer=pb.ProbeResult.SerializeToString),
        }),
    ]


@dataclass
class Agent:
    """One agent: its engines, services and server."""

    cluster: ClusterConfig
    cfg: AgentConfig
    grace_s: float = 30.0
    server: grpc.aio.Server | None = None
    port: int = 0
    health: health.aio.HealthServicer = field(default_factory=health.aio.HealthServicer)
    activity: Activity = field(default_factory=Activity)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    engine: GenerationEngine | None = None
    metrics: Metrics | None = None
    metrics_port: int = 0

    async def startup(self) -> None:
        """Build everything and start listening; raises ConfigError when it cannot."""
        cfg, security = self.cfg, self.cluster.security
        token = security.resolved_token()
        check_bind_allowed(cfg.listen, security, token)
        gpu.configure_allocator()
        options.tune_malloc()
        if cfg.torch_threads:
            import torch

            torch.set_num_threads(cfg.torch_threads)
        cfg.output_root.mkdir(parents=True, exist_ok=True)
        removed = sweep_parts(cfg.output_root)
        if removed:
            logger.info("removed %d temporary file(s) left by an earlier run", removed)
        self.engine = GenerationEngine(
            cfg.models_root, device=cfg.device, dtype=cfg.dtype, offload=cfg.offload, cpu_offload=cfg.cpu_offload,
            weight_storage=cfg.weight_storage, attention=cfg.attention, vae_tiling=cfg.vae_tiling,
            memory_fraction=cfg.gpu_memory_fraction, vram_budget_gib=cfg.vram_budget_gib,
            misses_file=default_home() / "memplan-misses.jsonl", max_width=cfg.max_width,
            max_height=cfg.max_height, max_frames=cfg.max_frames, max_batch=cfg.max_batch,
            **({"lora_budget_bytes": cfg.lora_budget_mib << 20} if cfg.lora_budget_mib > 0 else {}))
        chunk = self.cluster.network.chunk_bytes
        # One budget for every stream on this agent, whatever connection it came on.
        admission = Admission(Limits.of(cfg))
        gen = GenerateService(self.engine, cfg, self.activity, chunk_bytes=chunk, admission=admission)
        post = PostProcessService(cfg, self.activity, engine=self.engine, admission=admission)
        diag = DiagnosticsService(cfg, self.activity, self.cluster)
        # The token is checked first; the guard then parses what the handlers will see.
        interceptors = [*([TokenInterceptor(token)] if token else []), RequestGuard(cfg.stream_idle_s)]
        self.server = grpc.aio.server(interceptors=interceptors, options=options.SERVER_OPTIONS)
        self.server.add_generic_rpc_handlers(_handlers(gen, post, diag))
        split = SplitService(self.engine, cfg, self.activity, chunk_bytes=chunk, admission=admission)
        self.server.add_generic_rpc_handlers([split.handler()])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.server.add_generic_rpc_handlers([UnknownMethods()])
        creds = server_credentials(security)
        try:
            if creds is not None:
                self.port = self.server.add_secure_port(cfg.listen, creds)
            else:
                self.port = self.server.add_insecure_port(cfg.listen)
        except RuntimeError as exc:
            raise ConfigError(f"cannot listen on {cfg.listen}: {exc} (is another agent running?)") from None
        if self.port == 0:
            raise ConfigError(f"cannot listen on {cfg.listen} (address in use or not on this machine?)")
        if cfg.metrics_port:
            self.metrics = Metrics("agent", cfg.name, activity=self.activity, gpu=True)
            self.activity.metrics = self.metrics
            self.metrics_port = self.metrics.serve(cfg.listen, cfg.metrics_port)
        await self.server.start()
        for name in cfg.preload:
            logger.info("loading model %s", name)
            await asyncio.to_thread(self.engine.load, name)
        await self._set_serving(health_pb2.HealthCheckResponse.SERVING)
        logger.info("agent %s listening on %s (port %d)%s%s", cfg.name, cfg.listen, self.port,
                    ", token required" if token else "", ", mutual TLS" if creds else "")

    async def _set_serving(self, status: int) -> None:
        for service in ("", *SERVICES):
            await self.health.set(service, status)

    async def main_loop(self) -> None:
        await self._stop.wait()

    def request_stop(self) -> None:
        """Signal handlers call this; it only sets a flag."""
        if self._stop.is_set():
            logger.warning("second stop request: exiting now")
            sys.exit(130)
        self._stop.set()

    async def shutdown(self) -> None:
        """NOT_SERVING first, let streams finish (up to grace_s), cancel the rest, free the GPU."""
        await self.health.enter_graceful_shutdown()
        if self.server is not None:
            await self.server.stop(self.grace_s)
        if self.engine is not None:
            self.engine.close()
        if self.metrics is not None:
            self.metrics.close()
        gpu.release_memory()
        logger.info("agent %s stopped", self.cfg.name)

    async def run(self) -> None:
        await self.startup()
        await self.serve_until_stopped()

    async def serve_until_stopped(self) -> None:
        """Serve until SIGINT/SIGTERM, then shut down gracefully."""
        loop = asyncio.get_running_loop()
        # SIGBREAK: how `artifex-agent down` and the Windows service ask a process to stop there.
        for sig in (signal.SIGINT, signal.SIGTERM, *([signal.SIGBREAK] if hasattr(signal, "SIGBREAK") else [])):
            try:
                loop.add_signal_handler(sig, self.request_stop)
            except (NotImplementedError, RuntimeError):  # Windows: no loop signal handlers
                signal.signal(sig, lambda *_: loop.call_soon_threadsafe(self.request_stop))
        try:
            await self.main_loop()
        finally:
            await self.shutdown()


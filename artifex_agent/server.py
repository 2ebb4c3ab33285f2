"""The agent process: its engines and services behind one gRPC server (lifecycle.serve runs it)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc

from artifex_agent.config import AgentConfig, ClusterConfig, default_home
from artifex_agent.delivery.deliverer import Deliverer
from artifex_agent.engines import gpu
from artifex_agent.engines.generation import GenerationEngine
from artifex_agent.engines.paths import sweep_parts
from artifex_agent.lifecycle import GrpcService, bind
from artifex_agent.metrics import Metrics
from artifex_agent.services.activity import Activity
from artifex_agent.services.admission import Admission, Limits
from artifex_agent.services.diagnostics import DiagnosticsService
from artifex_agent.services.generate import GenerateService
from artifex_agent.services.guard import RequestGuard, UnknownMethods
from artifex_agent.services.postprocess import PostProcessService
from artifex_agent.services.split import SplitService
from artifex_agent.split.local import LocalSplit
from artifex_agent.transport import options
from artifex_agent.transport.methods import AGENT_SERVICES, agent_handlers
from artifex_agent.transport.security import TokenInterceptor, check_bind_allowed, reload_security, server_credentials

logger = logging.getLogger(__name__)

# The names the health service reports besides "" (the whole agent).
SERVICES = AGENT_SERVICES


@dataclass
class Agent(GrpcService):
    """One agent: its engines, services and server."""

    cluster: ClusterConfig
    cfg: AgentConfig
    grace_s: float = 30.0
    server: grpc.aio.Server | None = None
    activity: Activity = field(default_factory=Activity)
    engine: GenerationEngine | None = None
    metrics: Metrics | None = None
    metrics_port: int = 0
    deliverer: Deliverer | None = None
    # Always installed (an empty token lets every call through), so a reload can start requiring one.
    token_check: TokenInterceptor = field(default_factory=lambda: TokenInterceptor(""))

    @property
    def health_services(self) -> Sequence[str]:
        return SERVICES

    async def startup(self) -> None:
        """Build everything and start listening; raises ConfigError when it cannot."""
        cfg, security = self.cfg, self.cluster.security
        token = security.secrets.token
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
        # Deliver hands frames to the agents of this cluster file, by name, with its token and TLS.
        self.deliverer = Deliverer(cfg, self.cluster, self.activity, self.engine, chunk_bytes=chunk)
        split = SplitService(self.engine, cfg, self.activity, chunk_bytes=chunk, admission=admission)
        gen = GenerateService(self.engine, cfg, self.activity, chunk_bytes=chunk, admission=admission,
                              deliverer=self.deliverer, local_split=LocalSplit(split))
        post = PostProcessService(cfg, self.activity, engine=self.engine, admission=admission)
        diag = DiagnosticsService(cfg, self.activity, self.cluster)
        # The token is checked first; the guard then parses what the handlers will see.
        self.token_check.set_token(token)
        interceptors = [self.token_check, RequestGuard(cfg.stream_idle_s)]
        self.server = grpc.aio.server(interceptors=interceptors, options=options.SERVER_OPTIONS)
        # Registered from the table instead of add_*Servicer_to_server: bulk streams skip protobuf
        # (de)serialization (a None serializer passes raw bytes), see transport/methods.py.
        self.server.add_generic_rpc_handlers(agent_handlers(gen, post, diag, split))
        self.add_standard_services(self.server)
        self.server.add_generic_rpc_handlers([UnknownMethods()])
        creds = server_credentials(security)
        self.port = bind(self.server, cfg.listen, creds)
        if cfg.metrics_port:
            self.metrics = Metrics("agent", cfg.name, activity=self.activity, gpu=True)
            self.activity.metrics = self.metrics
            self.metrics_port = self.metrics.serve(cfg.listen, cfg.metrics_port)
        await self.server.start()
        for name in cfg.preload:
            logger.info("loading model %s", name)
            await asyncio.to_thread(self.engine.load, name)
        await self.set_serving()
        logger.info("agent %s listening on %s (port %d)%s%s", cfg.name, cfg.listen, self.port,
                    ", token required" if token else "", ", mutual TLS" if creds else "")

    def reload(self) -> None:
        """SIGHUP: the token and TLS files read again; new calls and channels use them, open streams go on."""
        reload_security(self.cluster.security, self.token_check, f"agent {self.cfg.name}")

    async def close(self) -> None:
        """Let streams finish (up to grace_s), cancel the rest, free the GPU."""
        if self.server is not None:
            await self.server.stop(self.grace_s)
        if self.deliverer is not None:
            await self.deliverer.close()
        if self.engine is not None:
            self.engine.close()
        if self.metrics is not None:
            self.metrics.close()
        gpu.release_memory()
        logger.info("agent %s stopped", self.cfg.name)

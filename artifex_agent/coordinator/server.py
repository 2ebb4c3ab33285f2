"""The coordinator process: open the store, start the Jobs server and the scheduler, stop gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from artifex_agent.config import ClusterConfig
from artifex_agent.coordinator.cache import ResultsCache
from artifex_agent.coordinator.events import EventBus
from artifex_agent.coordinator.jobs import JobQueue
from artifex_agent.coordinator.scheduler import Scheduler
from artifex_agent.coordinator.service import JobsService
from artifex_agent.coordinator.store import Store
from artifex_agent.errors import ConfigError, ExitCode
from artifex_agent.lockfile import InstanceLock
from artifex_agent.metrics import Metrics
from artifex_agent.proto.artifex.v1 import jobs_pb2_grpc
from artifex_agent.services.guard import UnknownMethods
from artifex_agent.transport import options
from artifex_agent.transport.security import TokenInterceptor, check_bind_allowed, server_credentials

logger = logging.getLogger(__name__)

SERVICE = "artifex.v1.Jobs"


@dataclass
class Coordinator:
    """One coordinator: its store, scheduler and gRPC server."""

    cluster: ClusterConfig
    grace_s: float = 10.0
    port: int = 0
    server: grpc.aio.Server | None = None
    scheduler: Scheduler | None = None
    health: health.aio.HealthServicer = field(default_factory=health.aio.HealthServicer)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    metrics: Metrics | None = None
    _metrics_task: asyncio.Task[None] | None = None
    _lock: InstanceLock | None = None

    async def startup(self) -> None:
        """Open everything and start serving; ConfigError when it cannot (exit code 3)."""
        cfg, security = self.cluster.coordinator, self.cluster.security
        token = security.resolved_token()
        check_bind_allowed(cfg.listen, security, token)
        if not self.cluster.agents:
            raise ConfigError("no agents in the config: add [agents.NAME] tables")
        options.tune_malloc()
        # Before the store is opened: a second coordinator would requeue the first one's running
        # jobs and run every job again.
        self._lock = InstanceLock(cfg.database, "coordinator",
                                  "stop it first, or give this one its own [coordinator] database").acquire()
        store = Store(cfg.database).open()
        try:
            self.scheduler, self.server = self._listen(store)
        except ConfigError:
            store.close()
            self._lock.release()
            raise
        if cfg.metrics_port:
            self.metrics = Metrics("coordinator", "coordinator")
            self.metrics.serve(cfg.listen, cfg.metrics_port)
            self._metrics_task = asyncio.create_task(self._report_queue())
        await self.scheduler.start()
        await self.server.start()
        for service in ("", SERVICE):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        logger.info("coordinator listening on %s (port %d), database %s, %d agent(s): %s", cfg.listen, self.port,
                    cfg.database, len(self.cluster.agents), ", ".join(a.name for a in self.cluster.agents))

    def _listen(self, store: Store) -> tuple[Scheduler, grpc.aio.Server]:
        """The scheduler and the gRPC server bound to the configured address (neither started yet)."""
        cfg, security = self.cluster.coordinator, self.cluster.security
        token = security.resolved_token()
        scheduler = Scheduler(self.cluster, store, EventBus(), ResultsCache(cfg.results_cache))
        interceptors = [TokenInterceptor(token, "coordinator")] if token else []
        server = grpc.aio.server(interceptors=interceptors, options=options.SERVER_OPTIONS)
        jobs_pb2_grpc.add_JobsServicer_to_server(JobsService(JobQueue(scheduler, self.cluster.presets)), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        server.add_generic_rpc_handlers([UnknownMethods("coordinator")])
        creds = server_credentials(security)
        try:
            self.port = (server.add_secure_port(cfg.listen, creds) if creds is not None
                         else server.add_insecure_port(cfg.listen))
        except RuntimeError as exc:
            raise ConfigError(f"cannot listen on {cfg.listen}: {exc} (is another coordinator running?)") from None
        if self.port == 0:
            raise ConfigError(f"cannot listen on {cfg.listen} (address in use or not on this machine?)")
        return scheduler, server

    async def _report_queue(self, every_s: float = 1.0) -> None:
        """Copy the job counts by state into the metrics (read on the database thread, like all reads)."""
        assert self.metrics is not None and self.scheduler is not None
        while True:
            self.metrics.set_queue_depth(await self.scheduler.call(self.scheduler.store.counts))
            await asyncio.sleep(every_s)

    def request_stop(self) -> None:
        """Signal handlers call this; it only sets a flag (a second request exits at once)."""
        if self._stop.is_set():
            logger.warning("second stop request: exiting now")
            sys.exit(int(ExitCode.INTERRUPTED))
        self._stop.set()

    async def shutdown(self) -> None:
        """NOT_SERVING, refuse new calls, let runs finish for grace_s, requeue the rest, close the store."""
        await self.health.enter_graceful_shutdown()
        if self.scheduler is not None:
            await self.scheduler.drain(self.grace_s)
        if self.server is not None:
            # Watch streams never end on their own: give unary calls a moment, then cut them.
            await self.server.stop(1.0)
        if self._metrics_task is not None:
            self._metrics_task.cancel()
        if self.scheduler is not None:
            await self.scheduler.close()
        if self.metrics is not None:
            self.metrics.close()
        if self._lock is not None:
            self._lock.release()
        logger.info("coordinator stopped")

    async def serve_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.request_stop)
            except (NotImplementedError, RuntimeError):  # Windows: no loop signal handlers
                signal.signal(sig, lambda *_: loop.call_soon_threadsafe(self.request_stop))
        try:
            await self._stop.wait()
        finally:
            await self.shutdown()

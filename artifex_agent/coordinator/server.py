"""The coordinator process: the store, the scheduler and the Jobs server (lifecycle.serve runs it)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc

from artifex_agent.config import ClusterConfig
from artifex_agent.coordinator.cache import ResultsCache
from artifex_agent.coordinator.events import EventBus
from artifex_agent.coordinator.jobs import JobQueue
from artifex_agent.coordinator.scheduler import Scheduler
from artifex_agent.coordinator.service import JobsService
from artifex_agent.coordinator.store import Store
from artifex_agent.errors import ConfigError
from artifex_agent.lifecycle import GrpcService, bind
from artifex_agent.lockfile import InstanceLock
from artifex_agent.metrics import Metrics
from artifex_agent.services.guard import UnknownMethods
from artifex_agent.transport import options
from artifex_agent.transport.methods import JOBS_SERVICES, jobs_handlers
from artifex_agent.transport.security import TokenInterceptor, check_bind_allowed, reload_security, server_credentials
from artifex_agent.web.server import WebServer, check_web_bind, start_web

logger = logging.getLogger(__name__)

(SERVICE,) = JOBS_SERVICES


@dataclass
class Coordinator(GrpcService):
    """One coordinator: its store, scheduler and gRPC server."""

    cluster: ClusterConfig
    grace_s: float = 10.0
    server: grpc.aio.Server | None = None
    scheduler: Scheduler | None = None
    metrics: Metrics | None = None
    _metrics_task: asyncio.Task[None] | None = None
    _lock: InstanceLock | None = None
    web: WebServer | None = None
    # Always installed (an empty token lets every call through), so a reload can start requiring one.
    token_check: TokenInterceptor = field(default_factory=lambda: TokenInterceptor("", "coordinator"))

    @property
    def health_services(self) -> Sequence[str]:
        return (SERVICE,)

    async def startup(self) -> None:
        """Open everything and start serving; ConfigError when it cannot (exit code 3)."""
        cfg, security = self.cluster.coordinator, self.cluster.security
        token = security.secrets.token
        check_bind_allowed(cfg.listen, security, token)
        check_web_bind(self.cluster)
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
            self.metrics = Metrics("coordinator", "coordinator", jobs=self.scheduler.metrics)
            self.metrics.serve(cfg.listen, cfg.metrics_port)
            self._metrics_task = asyncio.create_task(self._report_queue())
        await self.scheduler.start()
        await self.server.start()
        # The web page (docs/web.md) on the same loop, through a JobQueue over the same scheduler.
        self.web = await start_web(self.cluster, JobQueue(self.scheduler, self.cluster.presets))
        await self.set_serving()
        logger.info("coordinator listening on %s (port %d), database %s, %d agent(s): %s", cfg.listen, self.port,
                    cfg.database, len(self.cluster.agents), ", ".join(a.name for a in self.cluster.agents))

    def _listen(self, store: Store) -> tuple[Scheduler, grpc.aio.Server]:
        """The scheduler and the gRPC server bound to the configured address (neither started yet)."""
        cfg, security = self.cluster.coordinator, self.cluster.security
        scheduler = Scheduler(self.cluster, store, EventBus(), ResultsCache(cfg.results_cache))
        self.token_check.set_token(security.secrets.token)
        server = grpc.aio.server(interceptors=[self.token_check], options=options.SERVER_OPTIONS)
        server.add_generic_rpc_handlers(jobs_handlers(JobsService(JobQueue(scheduler, self.cluster.presets))))
        self.add_standard_services(server)
        server.add_generic_rpc_handlers([UnknownMethods("coordinator")])
        self.port = bind(server, cfg.listen, server_credentials(security))
        return scheduler, server

    async def _report_queue(self, every_s: float = 1.0) -> None:
        """Copy the job counts by state into the metrics (read on the database thread, like all reads)."""
        assert self.metrics is not None and self.scheduler is not None
        while True:
            self.metrics.set_queue_depth(await self.scheduler.call(self.scheduler.store.counts))
            await asyncio.sleep(every_s)

    def reload(self) -> None:
        """SIGHUP: the token and TLS files read again; new calls, health checks and channels use them.

        The cluster file's [agents.*] are read again too (docs/coordinator.md, "Adding an agent"):
        a new agent joins the pool, a removed one gets no new work; queued jobs stay queued. So is the web
        page's login secret (docs/web.md): a new one logs every browser out.
        """
        token = reload_security(self.cluster.security, self.token_check, "coordinator")
        if token is not None and self.scheduler is not None:
            # The pool's channels stay open (running stages keep going); only their calls' token changes.
            pool = self.scheduler.pool
            pool.token = token
            for agent in pool:
                agent.stub.token = token
        if self.cluster.source is None:
            return
        try:
            fresh = ClusterConfig.load(self.cluster.source)
            fresh.validate()
        except ConfigError as exc:
            logger.error("reload: %s; the agents and the web login stay as they were", exc)
            return
        self._reload_agents(fresh)
        if self.web is not None:
            self.web.reload_login(fresh)

    def _reload_agents(self, fresh: ClusterConfig) -> None:
        """Take [agents.*] from the cluster file as read again."""
        if self.scheduler is None:
            return
        if not fresh.agents:
            logger.error("reload: %s names no agents; the agents stay as they were", self.cluster.source)
            return
        self.scheduler.pool.reload(fresh.agents)

    async def close(self) -> None:
        """Refuse new calls, let runs finish for grace_s, requeue the rest, close the store."""
        if self.web is not None:
            await self.web.close()
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

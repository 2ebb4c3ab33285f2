"""The check registry, the result type, and the runner that connects to every agent once."""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from artifex_agent.config import AgentConfig, ClusterConfig, split_hostport
from artifex_agent.hosts import is_local_host
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.transport.channel import AgentStub, open_channel

logger = logging.getLogger(__name__)

# Stages run in this order. "local" checks (this PC only) start at once, beside the
# connection to the agents; "agents" checks read what the connection found and run
# together; "measure" and "bandwidth" checks run one after another so that they do not
# disturb each other's figures; --quick leaves "bandwidth" out.
Stage = Literal["local", "agents", "measure", "bandwidth"]
# Modules whose @check functions make up `health`, in the order of the table.
CHECK_MODULES = ("artifex_agent.health.agents", "artifex_agent.health.processes", "artifex_agent.health.system",
                 "artifex_agent.health.pairs", "artifex_agent.health.storage")


@dataclass
class CheckResult:
    """One row of the health table."""

    name: str
    ok: bool
    required: bool = True
    value: str = ""
    target: str = ""
    # What to do when it fails ("" when it passes).
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


CheckFn = Callable[["HealthContext"], Awaitable[list[CheckResult]]]


@dataclass
class Check:
    name: str
    stage: Stage
    fn: CheckFn


REGISTRY: list[Check] = []


def check(name: str, stage: Stage) -> Callable[[CheckFn], CheckFn]:
    """Register an async function returning rows for the health table."""
    def register(fn: CheckFn) -> CheckFn:
        REGISTRY.append(Check(name, stage, fn))
        return fn
    return register


@dataclass
class AgentState:
    """One agent as this process sees it."""

    cfg: AgentConfig
    # True when the agent's address belongs to this machine (no link in between).
    local: bool
    stub: AgentStub
    channel: grpc.aio.Channel
    serving: bool = False
    error: str = ""
    info: pb.AgentInfo | None = None
    check_ms: float = 0.0

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def address(self) -> str:
        return self.cfg.dial_address

    @property
    def host(self) -> str:
        return split_hostport(self.address)[0]


@dataclass
class HealthContext:
    """What the checks share: the config, the agents, and the options of this run."""

    cluster: ClusterConfig
    quick: bool = False
    # Seconds per direction of each bandwidth test, and round trips per RTT test.
    seconds: float = 2.0
    rtt_count: int = 500
    # Deadline for "is it there": short, so a pulled cable fails health within 2 s.
    connect_timeout: float = 1.0
    info_timeout: float = 5.0
    # Seconds all agent-to-agent measurements together may take (RTT and bandwidth): with N agents there are
    # N(N-1)/2 pairs, and health must still end; pairs left over show as not measured.
    pair_budget_s: float = 60.0
    agents: list[AgentState] = field(default_factory=list)
    token: str = ""
    # What the agents measured between themselves, per pair (the JSON's "links" matrix).
    links: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    _pair_deadline: float = 0.0

    def pair_deadline(self) -> float:
        """time.monotonic() by which every pair measurement must end; the clock starts at the first one."""
        if not self._pair_deadline:
            self._pair_deadline = time.monotonic() + self.pair_budget_s
        return self._pair_deadline

    def link(self, a: AgentState, b: AgentState) -> dict[str, Any]:
        """The matrix entry of the pair a, b, created on first use."""
        return self.links.setdefault((a.name, b.name), {"a": a.name, "b": b.name, "same_pc": a.local and b.local})

    def remote_agents(self) -> list[AgentState]:
        return [a for a in self.agents if not a.local]

    def pairs(self) -> list[tuple[AgentState, AgentState]]:
        return [(a, b) for i, a in enumerate(self.agents) for b in self.agents[i + 1:]]

    async def connect(self) -> None:
        """Ask every agent for its standard health status, then its Info, all at once."""
        self.token = self.cluster.security.secrets.token
        for cfg in self.cluster.agents:
            channel = open_channel(cfg.dial_address, self.cluster.security)
            host = split_hostport(cfg.dial_address)[0]
            self.agents.append(AgentState(cfg, is_local_host(host), AgentStub(channel, self.token), channel))
        await asyncio.gather(*(self._connect_one(a) for a in self.agents))

    async def _connect_one(self, agent: AgentState) -> None:
        from artifex_agent.health.link import describe_failure

        health = health_pb2_grpc.HealthStub(agent.channel)
        t0 = time.perf_counter()
        try:
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=self.connect_timeout,
                                       metadata=agent.stub.metadata)
            agent.check_ms = (time.perf_counter() - t0) * 1000
            if reply.status != health_pb2.HealthCheckResponse.SERVING:
                agent.error = f"answers but is {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
                return
            agent.serving = True
            agent.info = await agent.stub.info(timeout=self.info_timeout)
        except grpc.aio.AioRpcError as exc:
            agent.error = await describe_failure(exc, agent.address, self.cluster.security, self.connect_timeout)

    async def close(self) -> None:
        await asyncio.gather(*(a.channel.close() for a in self.agents), return_exceptions=True)


@dataclass
class HealthReport:
    """Every row, and whether the required ones all pass."""

    results: list[CheckResult]
    elapsed_s: float
    # One entry per measured pair of agents: RTT p50/p99 and bandwidth each way (what the rows summarise).
    links: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results if r.required)

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.required and not r.ok]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "elapsed_s": round(self.elapsed_s, 3),
                "checks": [r.to_dict() for r in self.results], "links": self.links}


def load_checks() -> list[Check]:
    """Import the check modules (they register themselves) and return the registry."""
    for module in CHECK_MODULES:
        importlib.import_module(module)
    # The table follows CHECK_MODULES, whatever order the modules happened to import in.
    order = {name: i for i, name in enumerate(CHECK_MODULES)}
    return sorted(REGISTRY, key=lambda c: order.get(c.fn.__module__, len(order)))


async def _run(chk: Check, ctx: HealthContext) -> list[CheckResult]:
    # A check that breaks is a failed row with its reason, never a traceback in the table.
    try:
        return await chk.fn(ctx)
    except Exception as exc:
        logger.debug("check %s raised", chk.name, exc_info=True)
        return [CheckResult(chk.name, ok=False, value=f"check failed: {type(exc).__name__}: {exc}",
                            fix="run with -vv and report this")]


async def run_health(cluster: ClusterConfig, *, quick: bool = False, seconds: float = 2.0, rtt_count: int = 500,
                     connect_timeout: float = 1.0, pair_budget_s: float = 60.0) -> HealthReport:
    """Run every registered check against `cluster` from this machine."""
    start = time.monotonic()
    checks = load_checks()
    ctx = HealthContext(cluster, quick=quick, seconds=seconds, rtt_count=rtt_count, connect_timeout=connect_timeout,
                        pair_budget_s=pair_budget_s)
    rows: dict[int, list[CheckResult]] = {}
    local = {i: asyncio.ensure_future(_run(c, ctx)) for i, c in enumerate(checks) if c.stage == "local"}
    try:
        await ctx.connect()
        agent_rows = await asyncio.gather(*(_run(c, ctx) for c in checks if c.stage == "agents"))
        rows.update(zip([i for i, c in enumerate(checks) if c.stage == "agents"], agent_rows, strict=True))
        for i, c in enumerate(checks):
            if c.stage == "measure" or (c.stage == "bandwidth" and not quick):
                rows[i] = await _run(c, ctx)
        for i, task in local.items():
            rows[i] = await task
    finally:
        for task in local.values():
            task.cancel()
        await ctx.close()
    results = [r for i in sorted(rows) for r in rows[i]]
    return HealthReport(results, time.monotonic() - start, list(ctx.links.values()))

"""Two real agents shared by the coordinator tests, and real coordinator processes started per test."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from grpc_health.v1 import health_pb2

from artifex_agent.client import Job, JobsClient
from artifex_agent.jobspec import JobSpec
from artifex_agent.launcher import ChildProcess, wait_serving
from artifex_agent.local_cluster import DEMO_MODEL, LocalCluster, write_cluster_toml
from tests.processes import session_ending, started, stop_together

# Small and quick: 16x16, 5 frames, 1 step runs in tens of milliseconds on a CPU.
TINY = {"width": 16, "height": 16, "frames": 5, "steps": 1, "guidance": 1.0, "fps": 8.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spec(prompt: str = "a red fox", **kw: Any) -> JobSpec:
    """A tiny job for the tiny model."""
    return JobSpec(prompts=[prompt], model=DEMO_MODEL, **{**TINY, **kw})


@pytest.fixture(scope="session")
def agents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Agents 'a' (prefers generation) and 'b' (prefers post-processing) on fixed ports, so a restart keeps them."""
    tables = {"a": {"listen": f"127.0.0.1:{free_port()}", "prefer": ["generate"], "preload": [DEMO_MODEL]},
              "b": {"listen": f"127.0.0.1:{free_port()}", "prefer": ["post"], "preload": [DEMO_MODEL]}}
    with started(LocalCluster(tmp_path_factory.mktemp("agents"), agents=tables)) as cluster:
        yield cluster


def ensure_up(cluster: LocalCluster) -> None:
    """Restart any agent a test killed."""
    for name, child in list(cluster.children.items()):
        if child.proc is None or child.proc.poll() is not None:
            cluster.start_agent(name)


class Coordinator:
    """`artifex-agent coordinator` as a child process on a fixed port, with its own database and cache."""

    def __init__(self, workdir: Path, cluster: LocalCluster, roles: dict[str, list[str]] | None = None,
                 grace: float = 2.0, token: str = "", **settings: Any) -> None:
        self.workdir = workdir
        self.grace = grace
        self.cluster = cluster
        self.port = free_port()
        presets: dict[str, dict[str, Any]] = settings.pop("presets", {})
        # No web page unless a test asks for one: many coordinators run at once, each would want port 8265.
        web: dict[str, Any] = settings.pop("web", {"listen": ""})
        coordinator = {"listen": f"127.0.0.1:{self.port}", "database": str(workdir / "jobs.db"),
                       "results_cache": str(workdir / "cache"), "batch_size": 1, "batch_timeout_s": 0.0,
                       "health_interval_s": 0.2, "backoff_initial_s": 0.2, "backoff_max_s": 1.0, **settings}
        tables: dict[str, dict[str, Any]] = {}
        for agent in cluster.config.agents:
            # output_root as the agents have it: the web page serves files only from there.
            tables[agent.name] = {"address": agent.dial_address, "prefer": list(agent.prefer),
                                  "output_root": str(agent.output_root),
                                  "roles": (roles or {}).get(agent.name, list(agent.roles)),
                                  "inputs_root": str(agent.inputs_root)}
        sections: dict[str, dict[str, Any]] = {"coordinator": coordinator, "web": web}
        sections.update({f"presets.{name}": table for name, table in presets.items()})
        if token:
            sections["security"] = {"token": token}
        self.token = token
        self.config = write_cluster_toml(workdir / "coordinator.toml", tables, **sections)
        self.child: ChildProcess | None = None
        self.address = f"127.0.0.1:{self.port}"

    def start(self) -> Coordinator:
        self.child = ChildProcess(["coordinator", "--config", str(self.config), "--port-file",
                                   str(self.workdir / "coordinator.port"), "--grace", str(self.grace)],
                                  self.workdir / "coordinator.log", self.workdir / "coordinator.port").start()
        self.child.wait_port()
        import asyncio

        asyncio.run(wait_serving(self.address, self.token, timeout=20))
        return self

    def kill(self) -> None:
        assert self.child is not None
        self.child.kill()

    def stop(self) -> int | None:
        return self.child.stop() if self.child else None

    def client(self) -> JobsClient:
        return JobsClient(self.address, self.token, timeout=20)

    def log(self) -> str:
        return (self.workdir / "coordinator.log").read_text(errors="replace")

    def wait_for_agents(self, client: JobsClient, timeout: float = 20.0) -> None:
        """Until the coordinator has health-checked the agents (a job runs at once, not after a check)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log().count("is up (") >= len(self.cluster.config.agents):
                return
            time.sleep(0.05)
        raise AssertionError(f"coordinator did not see the agents up:\n{self.log()[-3000:]}")


@pytest.fixture
def coordinator_factory(agents: LocalCluster, tmp_path: Path) -> Iterator[Any]:
    """Start coordinators for this test (stopped at its end); agents a test killed are restarted."""
    ensure_up(agents)
    coordinators: list[Coordinator] = []

    def make(roles: dict[str, list[str]] | None = None, grace: float = 2.0, token: str = "",
             **settings: Any) -> Coordinator:
        workdir = tmp_path / f"coordinator{len(coordinators)}"
        workdir.mkdir()
        c = Coordinator(workdir, agents, roles, grace, token, **settings).start()
        coordinators.append(c)
        return c

    yield make
    stop_together(c.child for c in coordinators if c.child is not None)
    if not session_ending():
        ensure_up(agents)


@pytest.fixture
def coordinator(coordinator_factory: Any) -> Coordinator:
    return coordinator_factory()


@pytest.fixture(scope="module")
def refusing_coordinator(agents: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    """One coordinator for a module's tests whose jobs are all refused: none of them leaves a job behind."""
    ensure_up(agents)
    c = Coordinator(tmp_path_factory.mktemp("refusing"), agents).start()
    try:
        yield c
    finally:
        stop_together([c.child] if c.child is not None else [])


def wait_stage(client: JobsClient, job_id: str, stages: tuple[str, ...], timeout: float = 30.0) -> Job:
    """Block until the job reports one of `stages` in a progress event."""
    for event in client.watch(job_id, timeout=timeout):
        if event.kind == "progress" and event.stage in stages:
            return client.get(job_id)
        if event.kind == "state" and event.state in ("done", "failed", "cancelled"):
            raise AssertionError(f"job {job_id} ended ({event.state}: {event.message}) before stage {stages}")
    raise AssertionError(f"job {job_id} never reached {stages}")


def parts(cluster: LocalCluster) -> list[Path]:
    return list((cluster.workdir / "outputs").rglob("*.part"))


def health_serving() -> int:
    return health_pb2.HealthCheckResponse.SERVING

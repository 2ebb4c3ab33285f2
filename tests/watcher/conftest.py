"""Drop folders on real disks, watchers running in a thread, and a recording job submitter.

`RecordingSubmitter` stands in for the coordinator only in tests of the watcher's own logic
(claiming, completeness, quarantine); `Rig` runs a real coordinator process, `post_agent` a
real post agent.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from artifex_agent.client import JobsClient
from artifex_agent.config import ClusterConfig, WatcherConfig
from artifex_agent.jobspec import JobSpec
from artifex_agent.launcher import ChildProcess, start_agent, wait_serving
from artifex_agent.local_cluster import write_cluster_toml
from artifex_agent.watcher.names import Layout
from artifex_agent.watcher.service import Watcher
from tests.processes import held, stop_together

MODELS = {"wan2.2-tiny-t2v-a14b", "wan2.2-t2v-a14b"}
POLL_S = 0.1


@dataclass
class FakeJob:
    state: str = "queued"
    outputs: list[str] = field(default_factory=list)
    error: str = ""


class RecordingSubmitter:
    """Idempotent like the coordinator (same key, same id), and counts every submit call."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_key: dict[str, str] = {}
        self.jobs: dict[str, FakeJob] = {}
        self.specs: dict[str, JobSpec] = {}
        self.calls = 0
        self.down = False
        self._ids = itertools.count(1)

    def submit(self, spec: JobSpec, idempotency_key: str = "") -> str:
        with self.lock:
            self.calls += 1
            if self.down:
                raise ConnectionError("coordinator down")
            if idempotency_key in self.by_key:
                return self.by_key[idempotency_key]
            job_id = f"j{next(self._ids):04d}"
            self.by_key[idempotency_key] = job_id
            self.jobs[job_id] = FakeJob()
            self.specs[job_id] = spec
            return job_id

    def get(self, job_id: str) -> FakeJob:
        with self.lock:
            return self.jobs[job_id]

    def finish(self, job_id: str, state: str = "done", outputs: list[str] | None = None, error: str = "") -> None:
        with self.lock:
            self.jobs[job_id] = FakeJob(state, outputs or [f"/projects/drop/{job_id}.mp4"], error)


def make_cluster(tmp: Path, **watcher: Any) -> ClusterConfig:
    cluster = ClusterConfig()
    cluster.watcher = WatcherConfig(root=tmp / "drop", ledger=tmp / "ledger" / "watcher.db",
                                    poll_interval_s=POLL_S, settle_s=0.2, status_interval_s=0.1, owner="w1")
    for key, value in watcher.items():
        setattr(cluster.watcher, key, value)
    return cluster


@contextmanager
def running(cluster: ClusterConfig, submitter: Any, **kw: Any) -> Iterator[Watcher]:
    """A watcher in a thread until the block ends."""
    kw.setdefault("models", lambda: MODELS)
    watcher = Watcher(cluster, submitter, **kw)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            watcher.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test
            errors.append(exc)

    thread = threading.Thread(target=target, name="watcher", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while watcher.mode is None and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)  # the observer thread is scheduling its watches
    try:
        yield watcher
    finally:
        watcher.request_stop()
        thread.join(30)
    if errors:
        raise errors[0]
    assert not thread.is_alive(), "watcher did not stop"


def wait_for(cond: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def job_text(prompt: str = "a fox", **fields: Any) -> str:
    lines = [f'prompt = "{prompt}"', 'model = "wan2.2-tiny-t2v-a14b"', 'size = "32x32"', "frames = 5", "steps = 2"]
    lines += [f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"' for k, v in fields.items()]
    return "\n".join(lines) + "\n"


def drop_file(folder: Path, name: str, text: str) -> Path:
    """Write as `name.part`, then rename: the way a careful writer drops a file."""
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / (name + ".part")
    part.write_text(text, encoding="utf-8")
    final = folder / name
    part.rename(final)
    return final


@pytest.fixture
def submitter() -> RecordingSubmitter:
    return RecordingSubmitter()


@pytest.fixture(params=["native", "polling"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Rig:
    """A coordinator process and the cluster file its watchers read; agents as the caller gives them."""

    def __init__(self, work: Path, agents: dict[str, dict[str, Any]], **watcher: Any) -> None:
        self.work = work
        self.port = free_port()
        self.root = Path(watcher.pop("root", work / "drop"))
        self.layout = Layout(self.root)
        self.watcher = {"root": str(self.root), "poll_interval_s": 0.1, "settle_s": 0.2, "status_interval_s": 0.2,
                        **watcher}
        self.agents = agents
        self.config = self.write("cluster.toml", owner="pc1", ledger=str(work / "pc1.db"))
        self.coordinator: ChildProcess | None = None
        self.watchers: list[ChildProcess] = []

    def write(self, name: str, **watcher: Any) -> Path:
        coordinator = {"listen": f"127.0.0.1:{self.port}", "database": str(self.work / "jobs.db"),
                       "results_cache": str(self.work / "cache"), "batch_size": 1, "batch_timeout_s": 0.0,
                       "health_interval_s": 0.2, "backoff_initial_s": 0.2, "backoff_max_s": 1.0}
        return write_cluster_toml(self.work / name, self.agents, coordinator=coordinator,
                                  watcher={**self.watcher, **watcher}, web={"listen": ""})

    def start_coordinator(self) -> None:
        self.coordinator = ChildProcess(["coordinator", "--config", str(self.config), "--port-file",
                                         str(self.work / "coordinator.port"), "--grace", "1"],
                                        self.work / "coordinator.log", self.work / "coordinator.port").start()
        self.coordinator.wait_port()
        import asyncio

        asyncio.run(wait_serving(f"127.0.0.1:{self.port}", timeout=20))

    def start_watcher(self, config: Path | None = None, log: str = "watch.log") -> ChildProcess:
        child = ChildProcess(["watch", "--config", str(config or self.config)], self.work / log).start()
        self.watchers.append(child)
        wait_for(lambda: "watching " in child.log_tail(200) or child.proc.poll() is not None,  # type: ignore[union-attr]
                 timeout=30, what="the watcher to start")
        assert child.proc is not None and child.proc.poll() is None, child.log_tail()
        return child

    def client(self) -> JobsClient:
        return JobsClient(f"127.0.0.1:{self.port}", timeout=20)

    def stop(self) -> None:
        stop_together([*self.watchers, *([self.coordinator] if self.coordinator is not None else [])])

    def stage(self, count: int, prefix: str = "job") -> Callable[[], None]:
        """Write `count` job files beside the inbox; the returned call renames them all in at once."""
        staging = self.work / "staging"
        staging.mkdir(exist_ok=True)
        self.layout.create()
        for i in range(count):
            (staging / f"{prefix}{i:03d}.toml").write_text(job_text(f"{prefix} {i}"))

        def drop() -> None:
            for i in range(count):
                os.rename(staging / f"{prefix}{i:03d}.toml", self.layout.inbox / f"{prefix}{i:03d}.toml")
        return drop

    def accepted_ids(self) -> list[str]:
        return [p.read_text().strip() for p in self.layout.accepted.glob("*.job")]


@pytest.fixture
def queue_only(tmp_path: Path) -> Iterator[Rig]:
    """A coordinator whose one agent is not running: jobs are accepted and stay queued."""
    rig = Rig(tmp_path, {"gpu": {"listen": f"127.0.0.1:{free_port()}"}})
    rig.start_coordinator()
    try:
        yield rig
    finally:
        rig.stop()


@pytest.fixture(scope="session")
def post_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ClusterConfig, Path]]:
    """One real agent that post-processes; the cluster config points at it."""
    work = tmp_path_factory.mktemp("post-agent")
    (work / "models").mkdir()
    config = write_cluster_toml(work / "cluster.toml", {"post": {
        "listen": "127.0.0.1:0", "roles": ["post"], "models_root": str(work / "models"),
        "output_root": str(work / "outputs"), "torch_threads": 1}})
    child: ChildProcess = start_agent(config, "post", work)
    with held(lambda: [child]):
        cluster = ClusterConfig.load(config)
        cluster.agent("post").address = f"127.0.0.1:{child.port}"
        yield cluster, work / "outputs"


def post_cluster(post_agent: tuple[ClusterConfig, Path], tmp_path: Path) -> ClusterConfig:
    """A watcher on a fresh drop folder under `tmp_path` that sends frames to `post_agent`."""
    base, _ = post_agent
    c = ClusterConfig(agents=base.agents, security=base.security)
    c.watcher = WatcherConfig(root=tmp_path / "drop", ledger=tmp_path / "watcher.db", poll_interval_s=POLL_S,
                              settle_s=0.2, owner="w1", output_subdir=f"drop-{tmp_path.name}")
    return c

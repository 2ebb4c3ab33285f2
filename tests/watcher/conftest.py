"""Drop folders on real disks, watchers running in a thread, and a recording job submitter.

`RecordingSubmitter` stands in for the coordinator only in tests of the watcher's own logic
(claiming, completeness, quarantine); tests/watcher/test_with_coordinator.py runs the real one.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from artifex_agent.config import ClusterConfig, WatcherConfig
from artifex_agent.jobspec import JobSpec
from artifex_agent.watcher.service import Watcher

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

"""The coordinator under attack and bad luck (issue 10): a second coordinator on one database,
oversized jobs, a List that must fit in a message, the token refusal, a full disk."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from artifex_agent.client import CoordinatorError, JobsClient
from artifex_agent.config import ClusterConfig
from artifex_agent.coordinator.jobs import MAX_PAGE_BYTES
from artifex_agent.coordinator.messages import spec_to_pb
from artifex_agent.coordinator.server import Coordinator as InProcessCoordinator
from artifex_agent.errors import ConfigError, ExitCode, RequestError
from artifex_agent.jobspec import MAX_PROMPT_CHARS, MAX_PROMPTS, MAX_TAG_VALUE_CHARS, MAX_TAGS
from artifex_agent.launcher import ChildProcess
from artifex_agent.local_cluster import write_cluster_toml
from artifex_agent.lockfile import InstanceLock
from artifex_agent.proto.artifex.v1 import jobs_pb2 as jpb
from artifex_agent.proto.artifex.v1 import jobs_pb2_grpc
from artifex_agent.transport.security import call_metadata
from tests.coordinator.conftest import Coordinator, free_port, spec


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "artifex_agent", *args], capture_output=True, text=True,
                          timeout=timeout)


class Local:
    """A coordinator in this process (its loop on a thread), in front of an agent that is never up:
    jobs stay queued, and its store can be reached to fake a failure."""

    def __init__(self, workdir: Path, token: str = "") -> None:
        self.workdir = workdir
        sections: dict[str, Any] = {"coordinator": {"listen": "127.0.0.1:0", "database": str(workdir / "jobs.db"),
                                                    "results_cache": str(workdir / "cache")},
                                    "web": {"listen": ""},
                                    "agents": {"gone": {"address": f"127.0.0.1:{free_port()}"}}}
        if token:
            sections["security"] = {"token": token}
        self.coordinator = InProcessCoordinator(ClusterConfig.from_dict(sections), grace_s=0.5)
        self.token = token
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="coordinator-loop", daemon=True)

    def __enter__(self) -> Local:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.coordinator.startup(), self.loop).result(30)
        self.address = f"127.0.0.1:{self.coordinator.port}"
        # A cluster file for the command line, naming the port this coordinator got.
        sections: dict[str, Any] = {"coordinator": {"listen": self.address}}
        if self.token:
            sections["security"] = {"token": self.token}
        self.config = write_cluster_toml(self.workdir / "client.toml", {"gone": {"address": "127.0.0.1:1"}},
                                         **sections)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.coordinator.shutdown(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def client(self, token: str | None = None) -> JobsClient:
        return JobsClient(self.address, self.token if token is None else token, timeout=20)


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Local]:
    with Local(tmp_path) as coordinator:
        yield coordinator


# ---------------------------------------------------------------------------- one database, one coordinator

def test_a_second_coordinator_on_the_same_database_refuses_to_start(coordinator: Coordinator,
                                                                   tmp_path: Path) -> None:
    database = coordinator.workdir / "jobs.db"
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    second = Coordinator(second_dir, coordinator.cluster, database=str(database))
    with coordinator.client() as client:
        coordinator.wait_for_agents(client)
        first_job = client.submit(spec("a first fox", seed=301))
        refused = cli("coordinator", "--config", str(second.config))
        assert refused.returncode == ExitCode.STARTUP_FAILURE, refused.stderr
        assert coordinator.child is not None and coordinator.child.proc is not None
        assert f"another coordinator already uses {database}" in refused.stderr
        assert f"pid {coordinator.child.proc.pid} on " in refused.stderr and "started 20" in refused.stderr
        assert "Traceback" not in refused.stderr
        # The first one never noticed: its jobs run once, none was requeued.
        second_job = client.submit(spec("a second fox", seed=302))
        for job_id in (first_job, second_job):
            job = client.wait(job_id, timeout=60)
            assert job.state == "done" and job.attempts == 1, job
    assert "requeued" not in coordinator.log()
    assert coordinator.stop() == 0
    InstanceLock(database, "test").acquire().release()  # free once the first one stopped


def test_a_coordinator_killed_with_sigkill_leaves_no_stale_lock(tmp_path: Path) -> None:
    database = tmp_path / "jobs.db"
    config = write_cluster_toml(tmp_path / "c.toml", {"gone": {"address": f"127.0.0.1:{free_port()}"}},
                                coordinator={"listen": "127.0.0.1:0", "database": str(database),
                                             "results_cache": str(tmp_path / "cache")}, web={"listen": ""})
    child = ChildProcess(["coordinator", "--config", str(config), "--port-file", str(tmp_path / "port")],
                         tmp_path / "coordinator.log", tmp_path / "port").start()
    try:
        child.wait_port()
        assert child.proc is not None
        with pytest.raises(ConfigError, match=f"pid {child.proc.pid} "):
            InstanceLock(database, "coordinator").acquire()
    finally:
        child.kill()
    # The OS dropped the lock with the process; the note it left behind blocks nothing.
    assert f'"pid": {child.proc.pid}' in (tmp_path / "jobs.db.lock").read_text()
    with Local(tmp_path) as again, again.client() as client:
        assert client.list() == []


# ---------------------------------------------------------------------------- sizes and pages

def test_oversized_fields_are_refused_at_submit_with_invalid_argument(local: Local) -> None:
    with grpc.insecure_channel(local.address) as channel:
        stub = jobs_pb2_grpc.JobsStub(channel)
        for change, words in (({"tags": {"x": "v" * (10 << 20)}}, f"tags['x'] is 10,485,760 characters; "
                                                                   f"the limit is {MAX_TAG_VALUE_CHARS:,}"),
                              ({"tags": {str(i): "v" for i in range(MAX_TAGS + 1)}}, f"at most {MAX_TAGS} tags"),
                              ({"prompts": ["p" * (MAX_PROMPT_CHARS + 1)]}, "prompts[0] is 8,193 characters"),
                              ({"negative_prompt": "n" * (1 << 20)}, "negative is 1,048,576 characters"),
                              ({"model": "m" * 10_000}, "model is 10,000 characters")):
            message = spec_to_pb(spec())
            for key, value in change.items():
                field = getattr(message, key)
                if isinstance(value, dict):
                    field.update(value)
                elif isinstance(value, list):
                    field[:] = value
                else:
                    setattr(message, key, value)
            # A raw call, as a program in another language would make it.
            with pytest.raises(grpc.RpcError) as err:
                stub.Submit(jpb.SubmitRequest(spec=message), timeout=20)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert words in err.value.details()
    with local.client() as client:
        assert client.list() == []
        # The client refuses before sending: a number in tags, as a TOML file would give it.
        with pytest.raises(RequestError, match=r"tags\['x'\] must be a string"):
            client.submit({"prompt": "a fox", "tags": {"x": 1}})
        with pytest.raises(RequestError, match="idempotency_key"):
            client.submit(spec(), idempotency_key="k" * 201)
    refused = cli("submit", "p" * (MAX_PROMPT_CHARS + 1), "--config", str(local.config))
    assert refused.returncode == ExitCode.FAILURE
    assert "prompts[0] is 8,193 characters; the limit is 8,192" in refused.stderr


@pytest.mark.slow
def test_list_pages_many_large_jobs_and_the_client_and_cli_fetch_them_all(local: Local) -> None:
    big = {"prompts": ["p" * MAX_PROMPT_CHARS] * MAX_PROMPTS,
           "tags": {f"tag{i}": "v" * MAX_TAG_VALUE_CHARS for i in range(MAX_TAGS)}}
    with local.client() as client:
        ids = [client.submit(dataclasses.replace(spec(seed=i), **big)) for i in range(30)]  # 30 x 300 KB
        with grpc.insecure_channel(local.address) as channel:
            stub = jobs_pb2_grpc.JobsStub(channel)
            first = stub.List(jpb.ListJobsRequest(page_size=10_000), timeout=20)
            assert 0 < len(first.jobs) < 30 and first.next_page_token
            assert first.ByteSize() <= MAX_PAGE_BYTES + first.jobs[0].ByteSize()
            with pytest.raises(grpc.RpcError) as err:
                stub.List(jpb.ListJobsRequest(page_token="seq=1; DROP TABLE jobs"), timeout=20)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [j.id for j in client.list(limit=None)] == ids[::-1]
        assert [j.id for j in client.list(limit=25)] == ids[::-1][:25]
        assert [j.id for j in client.list(["queued"], limit=0)] == ids[::-1]
        assert client.list(["done"], limit=None) == []
        assert all(j.spec.tags == big["tags"] for j in client.list(limit=3))
        # A job submitted while paging shifts nothing: pages continue below the last job sent.
        with grpc.insecure_channel(local.address) as channel:
            stub = jobs_pb2_grpc.JobsStub(channel)
            page = stub.List(jpb.ListJobsRequest(page_size=4), timeout=20)
            seen = [j.id for j in page.jobs]
            client.submit(spec("a late fox", seed=99))
            while page.next_page_token:
                page = stub.List(jpb.ListJobsRequest(page_token=page.next_page_token), timeout=20)
                seen += [j.id for j in page.jobs]
        assert seen == ids[::-1]
    listed = cli("jobs", "--json", "--limit", "0", "--config", str(local.config))
    assert listed.returncode == 0, listed.stderr
    assert [j["id"] for j in json.loads(listed.stdout)][1:] == ids[::-1]
    table = cli("jobs", "--config", str(local.config))
    assert table.returncode == 0 and ids[-1] in table.stdout, table.stderr


# ---------------------------------------------------------------------------- messages and failures

def test_the_token_refusal_names_the_coordinator(tmp_path: Path) -> None:
    with Local(tmp_path, token="s3cret-token") as local:
        with local.client(token="") as client, pytest.raises(CoordinatorError) as err:
            client.list()
        assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert "this coordinator requires a token" in str(err.value)
        with local.client() as client:
            assert client.list() == []


@pytest.mark.parametrize("token", ["s3cret-token", ""])
def test_an_empty_client_stream_to_an_unknown_method_is_answered_at_once(tmp_path: Path, token: str) -> None:
    async def call(address: str) -> tuple[grpc.aio.AioRpcError, float]:
        async def never() -> AsyncIterator[bytes]:
            await asyncio.sleep(3600)
            yield b""

        async with grpc.aio.insecure_channel(address) as ch:
            start = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ch.stream_unary("/artifex.v1.Jobs/Nope")(never(), metadata=call_metadata(token), timeout=20)
            return err.value, time.monotonic() - start

    # With the token configured, the caller without one is refused before the method is looked up.
    with Local(tmp_path, token="s3cret-token") as local:
        err, took = asyncio.run(call(local.address))
    expected = grpc.StatusCode.UNIMPLEMENTED if token else grpc.StatusCode.UNAUTHENTICATED
    assert err.code() == expected and took < 2.0, (err, took)
    if token:
        assert "this coordinator has no method '/artifex.v1.Jobs/Nope'" in str(err.details())


class _FullDisk:
    """The store's connection, failing every new job the way a full disk does."""

    def __init__(self, db: sqlite3.Connection, error: Exception) -> None:
        self._db = db
        self._error = error

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.startswith("INSERT INTO jobs"):
            raise self._error
        return self._db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


@pytest.mark.parametrize("error", [sqlite3.OperationalError("database or disk is full"),
                                   OSError(errno.ENOSPC, "No space left on device")])
def test_a_full_disk_at_submit_answers_resource_exhausted(local: Local, monkeypatch: pytest.MonkeyPatch,
                                                          error: Exception) -> None:
    store = local.coordinator.scheduler.store  # type: ignore[union-attr]
    monkeypatch.setattr(store, "_db", _FullDisk(store.db, error))
    with local.client() as client:
        with pytest.raises(CoordinatorError) as err:
            client.submit(spec())
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"disk full on {local.workdir / 'jobs.db'}" in str(err.value)
        monkeypatch.undo()  # space again: the coordinator carries on
        assert client.get(client.submit(spec())).state == "queued"
        assert len(client.list()) == 1  # the refused Submit left no job behind

"""Why a queued job waits and when it should start (in the job, its events, `jobs`, `top`); its wait in its times."""

from __future__ import annotations

import asyncio
import io
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from artifex_agent.cli import top
from artifex_agent.cli.main import main as cli_main
from artifex_agent.config import AgentConfig, ClusterConfig, CoordinatorConfig
from artifex_agent.coordinator.agents import AgentHandle
from artifex_agent.coordinator.batching import QueueEntry, pick_batch
from artifex_agent.coordinator.job import Job
from artifex_agent.coordinator.store import Store
from artifex_agent.coordinator.waiting import Wait, explain
from artifex_agent.local_cluster import LocalCluster
from artifex_agent.metrics import metrics_url, scrape, total
from tests.coordinator.conftest import free_port, spec, wait_stage

# Several seconds of denoising on the tiny model: the agent stays busy while the test looks (then cancels it).
SLOW = {"width": 128, "height": 128, "frames": 81, "steps": 200}


def test_by_default_a_lone_job_on_an_idle_agent_does_not_wait_for_company() -> None:
    cfg = CoordinatorConfig()
    entry = QueueEntry(Job.submitted("job1", spec(), 1000.0), 0, "key", 1000.0)
    batch, due = pick_batch([entry], lambda e: True, batch_size=cfg.batch_size, timeout_s=cfg.batch_timeout_s,
                            max_clips=8, now=1000.0)
    assert batch == [entry] and due is None
    # What queued up meanwhile (agents busy) still goes as one batch, up to batch_size.
    more = [QueueEntry(Job.submitted(f"job{i}", spec(seed=i), 1000.0), i, f"k{i}", 1000.0) for i in range(6)]
    batch, _ = pick_batch(more, lambda e: True, batch_size=cfg.batch_size, timeout_s=cfg.batch_timeout_s,
                          max_clips=8, now=1000.0)
    assert len(batch) == cfg.batch_size > 1


def _agent(name: str, *, up: bool = True, roles: tuple[str, ...] = ("generate", "post")) -> AgentHandle:
    agent = AgentHandle(AgentConfig(name=name, roles=list(roles)), stub=None, channel=None)  # type: ignore[arg-type]
    agent.up = up
    return agent


def test_each_reason_to_wait_is_named() -> None:
    now = 1000.0
    retrying = QueueEntry(Job.submitted("job1", spec(seed=1), now), 1, "k1", now, not_before=now + 4)
    retrying.job.error = "agent b went away"
    first = QueueEntry(Job.submitted("job2", spec(seed=2), now), 2, "same", now)
    twin = QueueEntry(Job.submitted("job3", spec(seed=2), now), 3, "same", now)
    waits = explain([retrying, first, twin], [_agent("a"), _agent("b")], [], batch_size=4, batch_timeout_s=10,
                    now=now)
    assert waits["job1"] == Wait("waiting to retry (attempt 1) after: agent b went away", now + 4, "retry")
    assert waits["job2"].reason == "waiting for a batch of 4 (1 queued)" and waits["job2"].expected == now + 10
    assert waits["job3"].reason == "waiting for job job2, an identical job: its result is reused"
    # Nobody able: each agent says why.
    waits = explain([first], [_agent("a", up=False), _agent("b", roles=("post",))], [], batch_size=4,
                    batch_timeout_s=0, now=now)
    assert waits["job2"].reason == "waiting for an agent able to run it (a is down; b does not generate)"
    # An idle agent and no batching: nothing to wait for.
    assert explain([first], [_agent("a")], [], batch_size=4, batch_timeout_s=0, now=now)["job2"].key == "starting"


def test_a_job_waiting_for_a_batch_says_so_and_when_it_starts(coordinator_factory: Any,
                                                             capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    coordinator = coordinator_factory(batch_size=3, batch_timeout_s=2.0, metrics_port=port)
    with coordinator.client() as client:
        coordinator.wait_for_agents(client)
        job_id = client.submit(spec("a patient fox", seed=51))
        deadline = time.monotonic() + 5
        job = client.get(job_id)
        while not job.waiting and job.state == "queued" and time.monotonic() < deadline:
            time.sleep(0.05)
            job = client.get(job_id)
        assert job.state == "queued" and "waiting for a batch of 3 (1 queued)" in job.waiting, job
        assert job.expected_start is not None and abs(job.expected_start - (job.created + 2.0)) < 0.5
        # `jobs` shows the reason and the time left (on one line: a wide terminal).
        monkeypatch.setenv("COLUMNS", "250")
        assert cli_main(["jobs", "--config", str(coordinator.config)]) == 0
        out = capsys.readouterr().out
        assert "waiting for a batch of 3" in out and "starts in" in out, out
        events = []
        for event in client.watch(job_id, timeout=30):
            events.append(event)
            if event.kind == "state" and event.state == "done":
                break
        done = client.get(job_id)
    assert done.state == "done" and not done.waiting and done.expected_start is None
    # The wait counts in the job's times.
    assert 1.8 < done.queued_s < 3.5, done
    assert any(e.snapshot and e.job is not None and "waiting for a batch" in e.job.waiting for e in events)
    # And in the metrics: the wait, the job's stages, its end, the agents' busy time.
    samples = scrape(metrics_url("127.0.0.1:0", port))
    assert total(samples, "artifex_job_queue_wait_seconds_count") == 1
    assert 1.8 < total(samples, "artifex_job_queue_wait_seconds_sum") < 3.5
    assert total(samples, "artifex_job_stage_duration_seconds_count", stage="generating") == 1
    assert total(samples, "artifex_job_stage_duration_seconds_count", stage="post") == 1
    assert total(samples, "artifex_job_duration_seconds_count", outcome="done") == 1
    assert total(samples, "artifex_agent_busy_seconds_total", agent=done.agent, role="generate") > 0


def test_a_job_behind_a_busy_agent_names_it(coordinator_factory: Any, agents: LocalCluster) -> None:
    coordinator = coordinator_factory(roles={"a": ["generate", "post"], "b": ["post"]})
    with coordinator.client() as client:
        coordinator.wait_for_agents(client)
        slow = client.submit(spec("a long river", seed=52, **SLOW))
        wait_stage(client, slow, ("denoise",))
        second = client.submit(spec("a second river", seed=53))
        reasons = []
        # A watcher learns the reason from the snapshot (the job's own), or from an event when it comes later.
        for event in client.watch(second, timeout=10):
            if event.snapshot and event.job is not None and event.job.waiting:
                reasons.append(event.job.waiting)
            elif event.kind == "info" and event.message.startswith("waiting"):
                reasons.append(event.message)
            if reasons:
                break
        job = client.get(second)
        screen = asyncio.run(_top(ClusterConfig.load(coordinator.config)))
        client.cancel(slow)
        assert client.wait(second, timeout=60).state == "done"
    assert reasons and f"a is generating job {slow}" in reasons[0], reasons
    assert f"a is generating job {slow}" in job.waiting and job.expected_start is None
    # `top` shows the running job's stage and step, and why the other one waits.
    assert re.search(rf"{slow}[ │]+running[ │]+generating · denoise \d+/200", screen), screen
    assert re.search(rf"{second}[ │]+queued[ │].*waiting for a free agent: a is generating job {slow}", screen), screen


async def _top(cluster: ClusterConfig) -> str:
    """One screen of `top`, taken as it would draw it after a refresh."""
    poller = top.Poller(cluster)
    try:
        await poller.snapshot()  # starts following the jobs' progress
        await asyncio.sleep(1.0)
        snap = await poller.snapshot()
    finally:
        await poller.close()
    out = io.StringIO()
    Console(file=out, width=250).print(top.render(snap, None))
    return out.getvalue()


def test_a_database_from_before_keeps_its_jobs_and_gains_their_queue_time(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    old = sqlite3.connect(path)  # schema 1: the jobs table as the previous coordinator wrote it
    old.executescript("""
        CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, state TEXT NOT NULL,
            spec TEXT NOT NULL, priority INTEGER NOT NULL DEFAULT 0, idempotency_key TEXT UNIQUE,
            content_key TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, agent TEXT NOT NULL DEFAULT '',
            post_agent TEXT NOT NULL DEFAULT '', created REAL NOT NULL, started REAL, finished REAL,
            not_before REAL NOT NULL DEFAULT 0, outputs TEXT NOT NULL DEFAULT '[]',
            sha256 TEXT NOT NULL DEFAULT '[]', error TEXT NOT NULL DEFAULT '', cached INTEGER NOT NULL DEFAULT 0,
            stage TEXT NOT NULL DEFAULT '', batch_id TEXT NOT NULL DEFAULT '');
        PRAGMA user_version=1;
    """)
    old.execute("INSERT INTO jobs (id, state, spec, content_key, created, stage) VALUES (?, ?, ?, ?, ?, ?)",
                ("job1", "queued", spec().to_json(), "k", 1000.0, "queued"))
    old.commit()
    old.close()
    store = Store(path).open()
    try:
        job = store.get("job1")
        assert job is not None and job.queued_s == 0.0 and job.state == "queued"
        job.start("a", "b", "", 1030.0, waited=30.0)
        store.save(job)
        again = store.get("job1")
        assert again is not None and again.queued_s == 30.0
        assert [j.id for j, *_ in store.queued()] == []
    finally:
        store.close()

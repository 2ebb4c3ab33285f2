"""Crashes and cancellations: kill -9 of the coordinator and of agents mid-stage, cancel queued and running."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import av
import pytest

from artifex_agent.client import JobsClient
from artifex_agent.local_cluster import LocalCluster
from tests.coordinator.conftest import Coordinator, parts, spec, wait_stage

# Each kills a process mid-job and waits for the recovery: seconds apiece.
pytestmark = pytest.mark.slow

# Seconds of denoising on the tiny model (200 steps at 64x64): long enough to act in the middle.
SLOW = {"width": 64, "height": 64, "frames": 9, "steps": 200}
# About 7 s of denoising here: several times what the cancel test allows after cancelling it.
LONG = {"width": 128, "height": 128, "frames": 81, "steps": 200}
# Post-processing that takes a couple of seconds: 41 frames upscaled 8x and encoded.
SLOW_POST = {"width": 64, "height": 64, "frames": 41, "upscale": 8}


def valid_video(path: str, frames: int) -> bool:
    with av.open(path) as c:
        return sum(1 for _ in c.decode(video=0)) == frames


def outputs_named(cluster: LocalCluster, job_id: str) -> list[Path]:
    return list((cluster.workdir / "outputs").rglob(f"{job_id}*"))


def _early_in_denoising(client: JobsClient, ids: list[str], timeout: float = 60.0) -> str:
    """A job of `ids` seen at most halfway through its denoising steps (any of them: on a loaded machine the
    first ones may be done before a watch starts; the later ones, batched behind, start after it)."""
    for event in client.watch(timeout=timeout):
        if event.job_id in ids and event.kind == "progress" and event.stage == "denoise" \
                and event.total and event.step * 2 <= event.total:
            return event.job_id
    raise AssertionError("no job was seen early in its denoising")


def test_kill9_of_the_coordinator_loses_no_job_and_runs_each_once(coordinator: Coordinator,
                                                                  agents: LocalCluster) -> None:
    # A client waiting across the crash just waits longer.
    waiter = coordinator.client()
    with coordinator.client() as client, ThreadPoolExecutor(1) as pool:
        coordinator.wait_for_agents(client)
        # Seconds of denoising each (SLOW): a job seen at most halfway through it cannot end before the kill.
        ids = [client.submit(spec(f"a fish in a lake {i}", seed=i, **{**SLOW, "frames": 5})) for i in range(6)]
        last = pool.submit(waiter.wait, ids[-1], 90)
        denoising = _early_in_denoising(client, ids)
        running = [j.id for j in client.list(["running"])]
        coordinator.kill()
        assert running, "nothing was running at the kill"
        coordinator.start()
        assert last.result().state == "done"
    waiter.close()
    with coordinator.client() as client:
        jobs = [client.wait(i, timeout=90) for i in ids]
        assert [j.state for j in jobs] == ["done"] * len(ids)
        assert len(client.list(limit=100)) == len(ids)
        history = {i: list(client.watch(i, history=True)) for i in running}
    for job in jobs:
        assert [Path(p).name for p in job.outputs] == [f"{job.id}.mp4"]
        assert valid_video(job.outputs[0], 5)
        # Exactly one file per job, wherever the re-run put it.
        assert len(outputs_named(agents, job.id)) == 1, outputs_named(agents, job.id)
    # A job listed in its (short) post stage may finish before the kill lands; one early in its denoising cannot.
    restarted = [i for i, events in history.items() if any("coordinator restarted" in e.message for e in events)]
    assert denoising in running and denoising in restarted, (denoising, running, restarted)
    assert restarted, "no job running at the kill was taken up again after the restart"
    for events in history.values():
        done = [e for e in events if e.seq and e.kind == "state" and e.state == "done"]
        assert len(done) == 1
    assert not parts(agents)


def test_an_agent_killed_mid_generation_hands_the_job_to_the_other(coordinator: Coordinator,
                                                                   agents: LocalCluster) -> None:
    with coordinator.client() as client:
        coordinator.wait_for_agents(client)
        job_id = client.submit(spec("a robot walking", seed=2, **SLOW))
        victim = wait_stage(client, job_id, ("denoise",)).agent
        agents.children[victim].kill()
        job = client.wait(job_id, timeout=60)
        assert job.state == "done", job.error
        assert job.agent != victim and job.attempts == 2
        retries = [e for e in client.watch(job_id, history=True) if e.kind == "retry"]
        assert retries and f"agent {victim} went away" in retries[0].message
    assert valid_video(job.outputs[0], 9)
    assert len(outputs_named(agents, job_id)) == 1
    assert not parts(agents)


def test_an_agent_killed_mid_post_processing_finishes_the_job_after_its_restart(coordinator_factory: Any,
                                                                                agents: LocalCluster) -> None:
    # Only 'b' post-processes: the job must wait for it to come back.
    coordinator = coordinator_factory(roles={"a": ["generate"], "b": ["post"]})
    with coordinator.client() as client:
        coordinator.wait_for_agents(client)
        job_id = client.submit(spec("a train at night", seed=4, **SLOW_POST))
        job = wait_stage(client, job_id, ("post",))
        assert job.post_agent == "b"
        agents.children["b"].kill()
        # While 'b' is down the job waits (retrying with backoff), then completes on it.
        time.sleep(1.0)
        assert client.get(job_id).state in ("queued", "running")
        agents.start_agent("b")
        job = client.wait(job_id, timeout=90)
        assert job.state == "done", job.error
        assert job.post_agent == "b" and job.attempts >= 2
    assert valid_video(job.outputs[0], 41)
    assert len(outputs_named(agents, job_id)) == 1
    # The killed encode's .part had the same name: the re-run replaced it.
    assert not parts(agents)


def test_a_post_agent_killed_mid_stream_has_the_other_post_from_the_held_frames(coordinator_factory: Any,
                                                                               agents: LocalCluster) -> None:
    # 'a' generates (and may post), 'b' prefers posting: the job is delivered from a to b.
    coordinator = coordinator_factory(roles={"a": ["generate", "post"], "b": ["post"]})
    try:
        with coordinator.client() as client:
            coordinator.wait_for_agents(client)
            job_id = client.submit(spec("a kite over a beach", seed=6, **SLOW_POST))
            job = wait_stage(client, job_id, ("post",))
            assert (job.agent, job.post_agent) == ("a", "b")
            agents.children["b"].kill()
            job = client.wait(job_id, timeout=60)
            assert job.state == "done", job.error
            assert job.post_agent == "a" and job.attempts == 2
            events = list(client.watch(job_id, history=True))
            retry = next(e for e in events if e.kind == "retry")
            assert "a still holds its frames: only the post stage runs again" in retry.message
            after = events[events.index(retry):]
            # The second attempt only post-processed (tests/services/test_deliver.py: no generation then).
            assert any("from the frames a holds (no new generation)" in e.message for e in after)
        assert valid_video(job.outputs[0], 41)
        # Nothing of the killed attempt became an output on b (its temporary, if any, waits in .tmp/).
        assert [p for p in outputs_named(agents, job_id) if ".tmp" not in p.parts] == [Path(job.outputs[0])]
    finally:
        agents.start_agent("b")
    assert not parts(agents)  # b's start swept its dead temporary


def test_cancel_a_queued_and_a_running_job(coordinator_factory: Any) -> None:
    coordinator = coordinator_factory(roles={"a": ["generate", "post"], "b": ["post"]})
    with coordinator.client() as client:
        coordinator.wait_for_agents(client)
        running = client.submit(spec("a slow river", seed=6, **LONG))
        queued = client.submit(spec("a queued river", seed=7))
        wait_stage(client, running, ("denoise",))
        job = client.cancel(queued)
        assert job.state == "cancelled" and job.attempts == 0
        t0 = time.monotonic()
        job = client.cancel(running)
        assert job.state == "cancelled" and job.finished
        # The agent stopped denoising: the next job runs on it at once, not after the rest of 200 steps.
        after = client.wait(client.submit(spec("after the cancel", seed=8)), timeout=30)
        assert after.state == "done" and after.agent == "a"
        assert time.monotonic() - t0 < 4.0
        assert not client.get(queued).outputs and not client.get(running).outputs
        events = Counter(e.state for e in client.watch(running, history=True) if e.kind == "state")
        assert events["cancelled"] == 2  # the recorded event and the final snapshot
        # A cancelled job can be retried: back in the queue, then done.
        assert client.retry(queued).state == "queued"
        assert client.wait(queued, timeout=60).state == "done"

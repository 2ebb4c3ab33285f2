"""The Jobs service against a real coordinator process and real agents: submit, results, cache, batching."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import av
import grpc
import numpy as np
import pytest

from artifex_agent.client import AsyncJobsClient, CoordinatorError, JobsClient
from artifex_agent.coordinator.messages import spec_to_pb
from artifex_agent.engines.encode import file_sha256
from artifex_agent.errors import RequestError
from artifex_agent.jobspec import JobSpec
from artifex_agent.local_cluster import LocalCluster
from artifex_agent.lora_ref import LoraRef
from artifex_agent.proto.artifex.v1 import jobs_pb2 as jpb
from artifex_agent.proto.artifex.v1 import jobs_pb2_grpc
from tests.coordinator.conftest import TINY, Coordinator, spec


def frames_of(path: str) -> np.ndarray:
    with av.open(path) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.mark.parametrize("fields, words", [
    ({"prompts": []}, "prompt"),
    ({"num_frames": 6}, "4k+1"),
    ({"width": 8}, "width"),
    ({"video_codec": 99}, "codec value 99"),
    ({"model": "../etc"}, "model"),
    ({"model": "no-such-model"}, "no agent"),
    ({"output": "../escape"}, "output"),
    ({"seed": -1}, "seed"),
])
def test_invalid_specs_are_rejected_at_submit(refusing_coordinator: Coordinator, fields: dict[str, Any],
                                              words: str) -> None:
    with refusing_coordinator.client() as client:
        refusing_coordinator.wait_for_agents(client)
        message = spec_to_pb(spec())
        for key, value in fields.items():
            if key == "prompts":
                del message.prompts[:]
            else:
                setattr(message, key, value)
        # A raw gRPC call, as a program in another language would make it.
        with grpc.insecure_channel(refusing_coordinator.address) as channel:
            with pytest.raises(grpc.RpcError) as err:
                jobs_pb2_grpc.JobsStub(channel).Submit(jpb.SubmitRequest(spec=message), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert words in err.value.details()
        assert client.list() == []


def test_the_client_validates_before_sending(refusing_coordinator: Coordinator) -> None:
    with refusing_coordinator.client() as client, pytest.raises(RequestError, match="4k\\+1"):
        client.submit(spec(frames=8))


def test_a_job_runs_through_both_agents_and_says_where_its_output_is(coordinator: Coordinator,
                                                                     agents: LocalCluster) -> None:
    with coordinator.client() as client:
        coordinator.wait_for_agents(client)
        job_id = client.submit(spec("a cat in the sea", width=32, height=32, upscale=2))
        job = client.wait(job_id, timeout=60)
        assert job.state == "done", job.error
        assert not job.cached and job.attempts == 1
        # Generation prefers 'a', post-processing the idle post-preferring 'b'.
        assert (job.agent, job.post_agent) == ("a", "b")
        out = Path(job.outputs[0])
        assert out == agents.workdir / "outputs" / "b" / "jobs" / f"{job_id}.mp4"
        assert frames_of(str(out)).shape == (5, 64, 64, 3)
        assert job.sha256 == [file_sha256(out)]
        assert job.created <= (job.started or 0) <= (job.finished or 0)
        history = [e for e in client.watch(job_id, history=True) if e.seq]
        states = [e.state for e in history if e.kind == "state"]
        assert states == ["queued", "running", "done"]


def test_a_repeated_job_completes_at_once_from_the_cache(coordinator: Coordinator) -> None:
    with coordinator.client() as client:
        coordinator.wait_for_agents(client)
        first = client.wait(client.submit(spec("a dog on a road", seed=7)), timeout=60)
        # Same content, different run-only fields (priority, tags, output name): still a hit.
        again_id = client.submit(spec("a dog on a road", seed=7, priority=3, tags={"from": "test"}))
        again = client.get(again_id)
        assert again.state == "done" and again.cached and again.attempts == 0 and again.agent == ""
        assert again.sha256 == first.sha256
        assert Path(again.outputs[0]).is_file()
        # Where a fresh run would have written it (issue 14, item 9), not inside the cache.
        assert again.outputs[0] == str(Path(first.outputs[0]).with_name(f"{again_id}.mp4"))
        # A different seed is different content: it runs.
        other = client.wait(client.submit(spec("a dog on a road", seed=8)), timeout=60)
        assert not other.cached and other.sha256 != first.sha256


def test_the_same_idempotency_key_gives_the_same_job_even_from_racing_clients(coordinator: Coordinator) -> None:
    ids: list[str] = []

    def submit() -> None:
        with coordinator.client() as client:
            ids.append(client.submit(spec("a bird", seed=11), idempotency_key="drop-abc123"))

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1 and len(ids) == 4
    with coordinator.client() as client:
        assert [j.id for j in client.list()] == ids[:1]
        assert client.submit(spec("another prompt"), idempotency_key="drop-abc123") == ids[0]
        assert client.wait(ids[0], timeout=60).state == "done"


@pytest.mark.slow
def test_batching_groups_only_compatible_jobs_and_keeps_each_jobs_seed(coordinator_factory: Any,
                                                                       agents: LocalCluster) -> None:
    coordinator = coordinator_factory(batch_size=3, batch_timeout_s=1.0)
    with coordinator.client() as client:
        coordinator.wait_for_agents(client)
        small = [client.submit(spec(f"a {w} fox", seed=20 + i)) for i, w in enumerate(("red", "blue", "green"))]
        large = [client.submit(spec(f"a {w} cat", seed=30 + i, width=32)) for i, w in enumerate(("red", "blue"))]
        jobs = {i: client.wait(i, timeout=60) for i in small + large}
    assert all(j.state == "done" for j in jobs.values())
    batches = {jobs[i].batch_id for i in small}
    assert len(batches) == 1 and "" not in batches
    # The two 32x32 jobs waited for company (batch_timeout), then ran together, never with the 16x16 ones.
    assert len({jobs[i].batch_id for i in large}) == 1 and jobs[large[0]].batch_id not in batches
    # A clip made in a batch is the clip its job makes alone (its own seed, not seed + position).
    alone = coordinator_factory()
    with alone.client() as client:
        alone.wait_for_agents(client)
        solo = client.wait(client.submit(spec("a blue fox", seed=21)), timeout=60)
    batched, single = frames_of(jobs[small[1]].outputs[0]).astype(int), frames_of(solo.outputs[0]).astype(int)
    assert np.abs(batched - single).mean() < 1.0
    neighbour = frames_of(jobs[small[0]].outputs[0]).astype(int)
    assert np.abs(neighbour - single).mean() > 5 * max(np.abs(batched - single).mean(), 0.2)


def test_async_client_submits_and_waits(coordinator: Coordinator) -> None:
    async def main() -> None:
        async with AsyncJobsClient(coordinator.address) as client:
            job_id = await client.submit(spec("a horse in the snow", seed=3))
            job = await client.wait(job_id, timeout=60)
            assert job.state == "done" and job.outputs
            assert [j.id for j in await client.list(["done"])] == [job_id]

    asyncio.run(main())


def test_priority_jumps_the_queue(coordinator_factory: Any) -> None:
    # One generating agent, so jobs run one after another in queue order.
    coordinator = coordinator_factory(roles={"a": ["generate", "post"], "b": ["post"]})
    with coordinator.client() as client:
        coordinator.wait_for_agents(client)
        # Seconds of denoising (a loaded machine once finished a shorter blocker before the last submit).
        blocker = client.submit(spec("a slow tree", width=64, height=64, frames=9, steps=200, seed=1))
        low = [client.submit(spec("a low tree", seed=40 + i)) for i in range(3)]
        high = client.submit(spec("an urgent tree", seed=50, priority=5))
        # What the test needs: every job was queued behind the blocker while it still generated.
        assert client.get(blocker).stage in ("queued", "generating"), client.get(blocker)
        jobs = {i: client.wait(i, timeout=90) for i in (blocker, *low, high)}
    assert all(j.state == "done" for j in jobs.values())
    assert all((jobs[high].started or 0) < (jobs[i].started or 0) for i in low)


def test_jobs_not_found_and_retry_rules(coordinator: Coordinator) -> None:
    with coordinator.client() as client:
        with pytest.raises(Exception, match="no job"):
            client.get("nope")
        done = client.wait(client.submit(spec("a moon", seed=5)), timeout=60)
        with pytest.raises(Exception, match="only failed or cancelled"):
            client.retry(done.id)
        assert client.cancel(done.id).state == "done"


def test_the_coordinator_requires_the_cluster_token(coordinator_factory: Any) -> None:
    coordinator = coordinator_factory(token="s3cret-token")
    with JobsClient(coordinator.address, "wrong", timeout=10) as client, \
            pytest.raises(CoordinatorError) as err:
        client.list()
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    with JobsClient.from_config(coordinator.config) as client:
        assert client.wait(client.submit(spec("a star", seed=99)), timeout=60).state == "done"


def test_a_preset_is_resolved_at_submit_and_the_fields_given_win(coordinator_factory: Any) -> None:
    tiny = {"steps": 2, "scheduler": "euler", "shift": 3.0, "guidance": 3.0}
    coordinator = coordinator_factory(presets={"tiny": tiny, "absent": {"loras": ["absent-lora:0.5:low"]}})
    with coordinator.client() as client:
        coordinator.wait_for_agents(client)
        # As a job file or `submit` writes it: steps and guidance given, the rest left to the preset.
        raw = {**TINY, "prompt": "a fox in snow", "model": spec().model, "preset": "tiny"}
        job = client.get(client.submit(JobSpec.from_dict(raw)))
        assert (job.spec.preset, job.spec.steps, job.spec.guidance) == ("tiny", 1, 1.0)
        assert (job.spec.scheduler, job.spec.shift) == ("euler", 3.0)
        done = client.wait(job.id, timeout=60)
        assert done.state == "done", done.error
        # A preset's LoRAs reach the agent: this one is not in its loras/ folder.
        failed = client.wait(client.submit(JobSpec.from_dict({**raw, "preset": "absent"})), timeout=60)
        assert failed.state == "failed" and "absent-lora" in failed.error, failed.error
        # Refused at Submit (INVALID_ARGUMENT), naming what is there.
        for name, words in (("turbo", "known: absent, fast, quality, tiny"), ("medium", "encode_preset")):
            with pytest.raises(RequestError, match=words):
                client.submit(JobSpec(prompts=["a fox"], model=spec().model, preset=name))


def test_loras_reach_the_agent_through_the_jobs_api(coordinator: Coordinator, agents: LocalCluster) -> None:
    from tests.lora_fixture import write_tiny_lora

    write_tiny_lora(agents.models_root / "loras" / "api-style.safetensors",
                    agents.models_root / agents.model / "transformer", seed=5)
    with coordinator.client() as client:
        coordinator.wait_for_agents(client)
        base = client.wait(client.submit(spec("a fox at dawn", seed=11)), timeout=60)
        styled = client.wait(client.submit(spec("a fox at dawn", seed=11, loras=[LoraRef("api-style", 1.0)])),
                             timeout=60)
        assert base.state == styled.state == "done", styled.error
        assert not styled.cached and styled.sha256 != base.sha256
        missing = client.wait(client.submit(spec("a fox at dawn", loras=[LoraRef("no-such-lora")])), timeout=60)
        assert missing.state == "failed" and missing.attempts == 1
        assert "no-such-lora" in missing.error and "loras" in missing.error

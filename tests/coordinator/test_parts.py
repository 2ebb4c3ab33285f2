"""The coordinator's pieces on their own: spec messages, the store, batching, routing, retries, the cache."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from artifex_agent.config import AgentConfig
from artifex_agent.coordinator.agents import AgentHandle
from artifex_agent.coordinator.batching import QueueEntry, pick_batch
from artifex_agent.coordinator.cache import ResultsCache
from artifex_agent.coordinator.messages import Job, JobEvent, job_from_pb, job_to_pb, spec_from_pb, spec_to_pb
from artifex_agent.coordinator.retry import backoff_s, classify
from artifex_agent.coordinator.routing import choose_post, idle_generators
from artifex_agent.coordinator.store import Store
from artifex_agent.errors import RequestError, StreamError
from artifex_agent.jobspec import JobSpec
from artifex_agent.lora_ref import LoraRef
from artifex_agent.proto.artifex.v1 import jobs_pb2 as jpb
from artifex_agent.transport.post_call import RemoteError


def test_every_spec_field_survives_the_wire() -> None:
    spec = JobSpec(prompts=["a", "b"], model="m", width=320, height=192, frames=17, steps=7, guidance=1.5,
                   guidance_2=2.5, negative="blur", seed=2**40, fps=24.0, image="in/x.png", upscale=4,
                   upscale_model="x4.pth", codec="av1", crf=0, encode_preset="slow", encoder="software", output="o/p",
                   priority=-3, split="cfg", decode_on="post", tags={"k": "v"},
                   loras=[LoraRef("ink", 0.5, "high"), LoraRef("grain", -1.0, "low")], scheduler="euler", shift=5.0,
                   boundary_ratio=0.9, preset="fast")
    assert spec_from_pb(spec_to_pb(spec)) == spec
    job = Job("j1", "running", spec, outputs=["/x.mp4"], attempts=2, agent="a", created=1.0, started=2.0,
              stage="generating")
    assert job_from_pb(job_to_pb(job)) == job


def test_unset_fields_take_jobspec_defaults_not_zero() -> None:
    spec = spec_from_pb(jpb.JobSpec(prompts=["a fox"]))
    assert spec == JobSpec(prompts=["a fox"])
    assert (spec.frames, spec.steps, spec.guidance, spec.codec) == (81, 40, 4.0, "h264")
    with pytest.raises(RequestError, match="4k\\+1"):
        spec_from_pb(jpb.JobSpec(prompts=["a fox"], num_frames=80))


def _job(i: int, **kw: object) -> Job:
    return Job(f"job{i}", "queued", JobSpec(prompts=[f"p{i}"], **kw), created=time.time())  # type: ignore[arg-type]


def test_store_keeps_jobs_across_a_crash_and_requeues_running_ones(tmp_path: Path) -> None:
    store = Store(tmp_path / "jobs.db").open()
    jobs = [_job(i) for i in range(3)]
    for job in jobs:
        store.insert(job, job.spec.content_key(), JobEvent(job.id, "state", "queued", time=job.created))
    jobs[1].state, jobs[1].attempts = "running", 1
    store.save(jobs[1], JobEvent("job1", "state", "running"))
    # No close(): the next open sees what a kill -9 would leave.
    again = Store(tmp_path / "jobs.db").open()
    assert again.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert again.requeue_interrupted() == ["job1"]
    assert [j.id for j, *_ in again.queued()] == ["job0", "job1", "job2"]
    assert again.get("job1").attempts == 0  # type: ignore[union-attr]
    assert [e.message for e in again.events("job1")][-1].startswith("requeued")
    store.close()
    again.close()


def test_store_gives_the_existing_job_for_a_known_idempotency_key(tmp_path: Path) -> None:
    store = Store(tmp_path / "jobs.db").open()
    first, second = _job(1), _job(2)
    first.idempotency_key = second.idempotency_key = "key"
    assert store.insert(first, "c", JobEvent("job1", "state", "queued")) == (first, False)
    found, existed = store.insert(second, "c", JobEvent("job2", "state", "queued"))
    assert existed and found.id == "job1"
    assert store.get("job2") is None


def _entry(i: int, queued_at: float, **kw: object) -> QueueEntry:
    job = _job(i, **kw)
    return QueueEntry(job, i, job.spec.content_key(), queued_at)


def test_batches_hold_only_compatible_jobs_and_wait_at_most_the_timeout() -> None:
    now = 1000.0
    entries = [_entry(0, now, width=320), _entry(1, now, width=640), _entry(2, now, width=320)]
    batch, due = pick_batch(entries, lambda e: True, batch_size=3, timeout_s=5, max_clips=8, now=now)
    assert batch == [] and due == now + 5
    batch, _ = pick_batch(entries, lambda e: True, batch_size=3, timeout_s=5, max_clips=8, now=now + 5)
    assert [e.job.id for e in batch] == ["job0", "job2"]
    # Full batches go at once; a raised priority does not wait for company.
    full, _ = pick_batch(entries, lambda e: True, batch_size=2, timeout_s=5, max_clips=8, now=now)
    assert [e.job.id for e in full] == ["job0", "job2"]
    urgent = [_entry(3, now, priority=1)]
    assert pick_batch(urgent, lambda e: True, batch_size=4, timeout_s=30, max_clips=8, now=now)[0] == urgent
    # An agent's clip limit caps the batch.
    wide = [_entry(4, now), _entry(5, now)]
    wide[0].job.spec.prompts = ["a"] * 8
    assert len(pick_batch(wide, lambda e: True, batch_size=4, timeout_s=5, max_clips=8, now=now)[0]) == 1


def _agent(name: str, prefer: list[str], *, generating: int = 0, posting: int = 0, up: bool = True) -> AgentHandle:
    a = AgentHandle(AgentConfig(name=name, prefer=prefer), stub=None, channel=None)  # type: ignore[arg-type]
    # Heard from (checked): routing waits for an agent's first health check before deciding without it.
    a.up, a.checked, a.generating, a.posting = up, True, generating, posting
    return a


def test_post_goes_to_an_idle_post_agent_else_stays_with_the_generator() -> None:
    pc1, pc2 = _agent("pc1", ["generate"]), _agent("pc2", ["post"])
    spec = JobSpec(prompts=["x"])
    assert [a.name for a in idle_generators([pc2, pc1])] == ["pc1", "pc2"]
    assert choose_post([pc1, pc2], spec, pc1).name == "pc2"  # type: ignore[union-attr]
    # Both generating: each post-processes its own jobs.
    pc2.generating = 1
    assert choose_post([pc1, pc2], spec, pc1).name == "pc1"  # type: ignore[union-attr]
    pc1.generating, pc2.generating = 1, 0
    assert choose_post([pc1, pc2], spec, pc2).name == "pc2"  # type: ignore[union-attr]
    # A retry goes back where its output was; a down agent is never chosen.
    assert choose_post([pc1, pc2], spec, pc1, previous="pc2").name == "pc2"  # type: ignore[union-attr]
    pc2.up = False
    assert choose_post([pc1, pc2], spec, pc1, previous="pc2").name == "pc1"  # type: ignore[union-attr]
    assert idle_generators([pc2]) == []


def test_retry_classification_and_capped_backoff() -> None:
    assert classify(RemoteError("pc2", grpc.StatusCode.UNAVAILABLE, "gone"))[1:] == (True, "pc2")
    assert classify(RemoteError("pc1", grpc.StatusCode.INVALID_ARGUMENT, "bad"))[1:] == (False, "")
    assert classify(StreamError("truncated"))[1] is True
    assert [backoff_s(n, 1.0, 5.0) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_cache_files_outputs_under_their_content_key(tmp_path: Path) -> None:
    cache = ResultsCache(tmp_path / "cache")
    out = tmp_path / "out.mp4"
    out.write_bytes(b"video")
    assert cache.lookup("ab" * 32) is None
    assert cache.store("ab" * 32, [str(out)], ["digest"])
    out.write_bytes(b"replaced")  # agents replace by rename; even an in-place write must not matter
    hit = cache.lookup("ab" * 32)
    assert hit is not None and hit.sha256 == ["digest"]
    assert Path(hit.outputs[0]).parent == tmp_path / "cache" / "ab" / ("ab" * 32)
    assert not cache.store("cd" * 32, [str(tmp_path / "elsewhere.mp4")], ["x"])  # not visible here
    assert not list((tmp_path / "cache").rglob("*.part"))


def test_an_unresolved_preset_travels_with_only_the_fields_the_client_gave() -> None:
    spec = JobSpec.from_dict({"prompt": "a fox", "preset": "fast", "steps": 40, "seed": 3})
    msg = spec_to_pb(spec)
    assert msg.HasField("steps") and msg.HasField("seed") and msg.preset == "fast"
    assert not msg.HasField("guidance_scale") and not msg.HasField("scheduler") and not msg.loras
    # At the coordinator the preset fills the rest; the explicit 40 steps stay.
    from artifex_agent.presets import builtin, resolve

    resolved = resolve(spec_from_pb(msg), builtin())
    assert (resolved.steps, resolved.guidance, resolved.scheduler, len(resolved.loras)) == (40, 1.0, "euler", 2)
    # Resolved, every field travels again.
    assert spec_to_pb(resolved).HasField("guidance_scale")


def test_what_the_generating_agent_receives_carries_the_loras_and_sampling() -> None:
    from artifex_agent.config import AgentConfig
    from artifex_agent.coordinator.pipeline import generate_request
    from artifex_agent.services.generate import to_engine_request

    loras = [LoraRef("ink", 0.5, "high"), LoraRef("grain", 1.0, "low")]
    jobs = [_job(i, loras=loras, scheduler="euler", shift=5.0, boundary_ratio=0.875, steps=4) for i in range(2)]
    request = generate_request(jobs, "batch1")
    req = to_engine_request(request, AgentConfig())
    assert req.loras == tuple(loras)
    assert (req.scheduler, req.shift, req.boundary_ratio, req.steps) == ("euler", 5.0, 0.875, 4)
    plain = to_engine_request(generate_request([_job(3)], "b"), AgentConfig())
    assert (plain.loras, plain.scheduler, plain.shift, plain.boundary_ratio) == ((), "", None, None)


def test_jobs_with_other_loras_never_share_a_batch() -> None:
    now = 1000.0
    entries = [_entry(0, now, loras=[LoraRef("ink")]), _entry(1, now, loras=[LoraRef("ink", 0.5)]),
               _entry(2, now, loras=[LoraRef("ink")]), _entry(3, now)]
    batch, _ = pick_batch(entries, lambda e: True, batch_size=4, timeout_s=0, max_clips=8, now=now)
    assert [e.job.id for e in batch] == ["job0", "job2"]

"""Deliver: the generating agent hands its frames straight to the post agent named in its cluster file."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import grpc
import pytest

from artifex_agent.local_cluster import LocalCluster, free_port
from artifex_agent.metrics import metrics_url, scrape, total
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from tests.processes import deliver_events, link_models, started

HOLD_S = 4.0
# Every call needs it, the agents' calls to each other included.
TOKEN = "deliver-token-3c9a"
SIDE, FRAMES = 32, 5


@pytest.fixture(scope="module")
def duo(tmp_path_factory: pytest.TempPathFactory, models_root: Path) -> Iterator[LocalCluster]:
    """Agents 'a' and 'b' (each dials the other by the cluster file), a token, metrics on, a short hold."""
    tables = {name: {"listen": f"127.0.0.1:{free_port()}", "metrics_port": free_port(), "hold_s": HOLD_S}
              for name in ("a", "b")}
    workdir = link_models(tmp_path_factory.mktemp("deliver"), models_root)
    with started(LocalCluster(workdir, agents=tables, token=TOKEN)) as c:
        yield c


def _request(cluster: LocalCluster, job_id: str, specs: list[pb.PostSpec], post_agent: str = "b",
             **kw: Any) -> pb.DeliverRequest:
    prompts = [f"a fox {i}" for i in range(len(specs))]
    generate = pb.GenerateRequest(model=cluster.model, task=pb.TASK_T2V, prompts=prompts, width=SIDE, height=SIDE,
                                  num_frames=FRAMES, steps=1, guidance_scale=1.0, seed=5, fps=8,
                                  output=pb.PAYLOAD_KIND_RGB24, job_id=job_id)
    return pb.DeliverRequest(generate=generate, post_agent=post_agent,
                             deliveries=[pb.Delivery(spec=s, clips=1) for s in specs], **kw)


def _spec(name: str, **kw: Any) -> pb.PostSpec:
    return pb.PostSpec(output_name=name, encode=True, upscale=kw.pop("upscale", 2), job_id=name, **kw)


async def _events(cluster: LocalCluster, request: pb.DeliverRequest,
                  on_event: Any = None) -> list[pb.DeliverEvent]:
    return await deliver_events(cluster.address("a"), TOKEN, request, on_event=on_event)


def _results(events: list[pb.DeliverEvent]) -> dict[int, pb.DeliveryResult]:
    return {e.result.index: e.result for e in events if e.WhichOneof("event") == "result"}


def _metric(cluster: LocalCluster, agent: str, metric: str, **labels: str) -> float:
    cfg = cluster.config.agent(agent)
    return total(scrape(metrics_url(cfg.listen, cfg.metrics_port)), metric, **labels)


def _frames_of(path: str) -> int:
    with av.open(path) as video:
        return sum(1 for _ in video.decode(video=0))


def test_a_batch_delivered_from_a_to_b_gives_one_mp4_per_job_on_b(duo: LocalCluster) -> None:
    received = _metric(duo, "b", "artifex_frames_total", direction="received")
    events = asyncio.run(_events(duo, _request(duo, "ab", [_spec("ab/one"), _spec("ab/two")])))
    results = _results(events)
    assert sorted(results) == [0, 1]
    b_outputs = duo.workdir / "outputs" / "b"
    for index, name in enumerate(("one", "two")):
        res = results[index]
        assert res.post_agent == "b" and res.WhichOneof("outcome") == "result"
        assert res.result.output_paths == [str(b_outputs / "ab" / f"{name}.mp4")]
        assert (res.result.width, res.result.height) == (2 * SIDE, 2 * SIDE)
        assert _frames_of(res.result.output_paths[0]) == FRAMES
        assert res.result.payload_bytes == FRAMES * SIDE * SIDE * 3
    assert not results[1].held  # every delivery succeeded: nothing kept
    # Each job's frames crossed once, straight from a to b.
    assert _metric(duo, "b", "artifex_frames_total", direction="received") == received + 2 * FRAMES
    stages = [e.progress.current_stage for e in events if e.WhichOneof("event") == "progress"]
    assert stages[0] == pb.STAGE_QUEUED and pb.STAGE_STREAM in stages


def test_same_agent_delivery_post_processes_in_process(duo: LocalCluster) -> None:
    sent = _metric(duo, "a", "artifex_frames_total", direction="sent")
    received = _metric(duo, "a", "artifex_frames_total", direction="received")
    posted_b = _metric(duo, "b", "artifex_stage_duration_seconds_count", stage="post")
    for post_agent in ("", "a"):  # empty, or this agent's own name
        events = asyncio.run(_events(duo, _request(duo, f"self{post_agent}", [_spec(f"self/{post_agent or 'x'}")],
                                                   post_agent=post_agent)))
        res = _results(events)[0]
        assert res.post_agent == "a" and res.WhichOneof("outcome") == "result", res
        assert Path(res.result.output_paths[0]).parent == duo.workdir / "outputs" / "a" / "self"
        assert _frames_of(res.result.output_paths[0]) == FRAMES
        assert res.result.payload_bytes == 0  # nothing crossed a link
        assert any(e.WhichOneof("event") == "post_progress" for e in events)
    # No PostProcess call was served or made: no frame was sent or received anywhere.
    assert _metric(duo, "a", "artifex_frames_total", direction="sent") == sent
    assert _metric(duo, "a", "artifex_frames_total", direction="received") == received
    assert _metric(duo, "b", "artifex_stage_duration_seconds_count", stage="post") == posted_b


def test_a_post_agent_not_in_the_cluster_file_is_refused_before_generating(duo: LocalCluster) -> None:
    generated = _metric(duo, "a", "artifex_stage_duration_seconds_count", stage="generate")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        asyncio.run(_events(duo, _request(duo, "nowhere", [_spec("x/y")], post_agent="127.0.0.1:1")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "no agent 127.0.0.1:1 in the cluster file"
    assert _metric(duo, "a", "artifex_stage_duration_seconds_count", stage="generate") == generated


def test_reuse_held_resends_without_generating_until_hold_s_runs_out(duo: LocalCluster) -> None:
    # The first delivery fails on b (no such upscale model): the frames stay held on a.
    bad = _spec("held/one", upscale_model="missing.safetensors")
    first = _results(asyncio.run(_events(duo, _request(duo, "held", [bad, _spec("held/two")]))))
    assert first[0].WhichOneof("outcome") == "error" and first[0].held
    assert first[0].error.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert first[1].WhichOneof("outcome") == "result"
    generated = _metric(duo, "a", "artifex_stage_duration_seconds_count", stage="generate")
    events = asyncio.run(_events(duo, _request(duo, "held", [_spec("held/one"), _spec("held/two")],
                                               reuse_held=True, only=[0])))
    again = _results(events)
    assert list(again) == [0] and again[0].WhichOneof("outcome") == "result"
    assert _frames_of(again[0].result.output_paths[0]) == FRAMES
    assert not again[0].held  # delivered: let go
    assert not any(e.WhichOneof("event") == "progress" for e in events)  # no generation at all
    assert _metric(duo, "a", "artifex_stage_duration_seconds_count", stage="generate") == generated
    # Once hold_s has passed, the frames are gone.
    first = _results(asyncio.run(_events(duo, _request(duo, "expire", [bad]))))
    assert first[0].held
    time.sleep(HOLD_S + 0.5)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        asyncio.run(_events(duo, _request(duo, "expire", [_spec("expire/one")], reuse_held=True)))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no longer held" in (err.value.details() or "")


@pytest.mark.slow
def test_a_post_agent_killed_mid_stream_fails_that_delivery_and_leaves_nothing(duo: LocalCluster) -> None:
    def kill_on_receive(event: pb.DeliverEvent) -> None:
        if event.WhichOneof("event") == "post_progress" and event.post_progress.progress.current_stage == \
                pb.STAGE_RECEIVE:
            duo.children["b"].kill()

    started_at = time.monotonic()
    try:
        events = asyncio.run(_events(duo, _request(duo, "killed", [_spec("killed/one", upscale=4)]),
                                     on_event=kill_on_receive))
        ended_s = time.monotonic() - started_at
        # The post stage is retried on another agent (here: a itself) from the held frames (within hold_s).
        again = _results(asyncio.run(_events(duo, _request(duo, "killed", [_spec("killed/one")], post_agent="a",
                                                           reuse_held=True))))
    finally:
        duo.start_agent("b")
    res = _results(events)[0]
    assert res.WhichOneof("outcome") == "error" and res.post_agent == "b"
    assert res.error.code in (grpc.StatusCode.UNAVAILABLE.value[0], grpc.StatusCode.CANCELLED.value[0]), res
    assert res.held
    assert ended_s < 30  # ended, not hung
    outputs = duo.workdir / "outputs" / "b" / "killed"
    assert not (outputs.exists() and list(outputs.glob("*.mp4")))  # nothing half-written became an output
    assert again[0].WhichOneof("outcome") == "result" and again[0].post_agent == "a"


def test_direct_mode_submit_delivers_from_the_generating_agent(duo: LocalCluster,
                                                               capsys: pytest.CaptureFixture) -> None:
    from artifex_agent.cli.main import main

    received = _metric(duo, "b", "artifex_frames_total", direction="received")
    assert main(["submit", "--config", str(duo.config_path), "--generate-on", "a", "--post-on", "b",
                 "--model", duo.model, "--size", f"{SIDE}x{SIDE}", "--frames", str(FRAMES), "--steps", "1",
                 "--no-progress", "--output", "direct/one", "a red fox"]) == 0
    out = capsys.readouterr().out
    path = duo.workdir / "outputs" / "b" / "direct" / "one.mp4"
    assert f"output: {path}" in out and _frames_of(str(path)) == FRAMES
    assert _metric(duo, "b", "artifex_frames_total", direction="received") == received + FRAMES

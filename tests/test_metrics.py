"""Prometheus metrics from real agents: a job moves the frame and byte counters; `top` shows both."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from artifex_agent.local_cluster import LocalCluster
from artifex_agent.metrics import metrics_url, scrape, total
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.transport.channel import AgentStub, open_channel
from bench.relay import generate_and_post
from tests.processes import link_models, started

# Its own pair of agents (its counters start at zero), real jobs through them.
pytestmark = pytest.mark.slow
FRAMES, SIDE = 5, 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, models_root: Path) -> Iterator[LocalCluster]:
    agents = {"gen": {"prefer": ["generate"], "metrics_port": free_port()},
              "post": {"prefer": ["post"], "metrics_port": free_port()}}
    with started(LocalCluster(link_models(tmp_path_factory.mktemp("metrics"), models_root), agents=agents)) as c:
        yield c


def _scrape(cluster: LocalCluster, name: str) -> dict:
    cfg = cluster.config.agent(name)
    return scrape(metrics_url(cfg.listen, cfg.metrics_port))


async def _job(cluster: LocalCluster) -> pb.PostResult:
    request = pb.GenerateRequest(model=cluster.model, task=pb.TASK_T2V, prompts=["a fox"], width=SIDE, height=SIDE,
                                 num_frames=FRAMES, steps=2, guidance_scale=1.0, seed=3, fps=8,
                                 output=pb.PAYLOAD_KIND_RGB24, job_id="metrics-job")
    spec = pb.PostSpec(output_name="metrics/clip", upscale=1, encode=True, job_id="metrics-job")
    gen, post = open_channel(cluster.address("gen")), open_channel(cluster.address("post"))
    try:
        relay = await generate_and_post(AgentStub(gen), AgentStub(post), request, spec, gen_name="gen",
                                        post_name="post")
        return relay.result
    finally:
        await gen.close()
        await post.close()


def test_a_job_moves_frame_and_byte_counters_on_both_agents(cluster: LocalCluster) -> None:
    before = _scrape(cluster, "gen")
    assert total(before, "artifex_frames_total", direction="sent") == 0
    assert total(before, "artifex_stages_in_flight", stage="generate") == 0
    result = asyncio.run(_job(cluster))
    assert result.frames == FRAMES
    gen, post = _scrape(cluster, "gen"), _scrape(cluster, "post")
    frame_bytes = FRAMES * SIDE * SIDE * 3
    assert total(gen, "artifex_frames_total", direction="sent") == FRAMES
    assert total(gen, "artifex_stream_bytes_total", direction="sent") == frame_bytes
    assert total(post, "artifex_frames_total", direction="received") == FRAMES
    assert total(post, "artifex_stream_bytes_total", direction="received") == frame_bytes
    assert total(gen, "artifex_stage_duration_seconds_count", stage="generate", outcome="ok") == 1
    assert total(post, "artifex_stage_duration_seconds_count", stage="post", outcome="ok") == 1
    assert total(gen, "artifex_stage_duration_seconds_sum", stage="generate") > 0
    assert total(gen, "artifex_build_info", name="gen", component="agent") == 1
    # No NVIDIA driver here: the GPU series say so instead of reporting zeros.
    assert ("artifex_gpu_available", ()) in gen


def test_metrics_listen_on_the_agents_host_only(cluster: LocalCluster) -> None:
    # Read from the socket table, not by dialling: no traffic leaves loopback.
    port = cluster.config.agent("gen").metrics_port
    listening = [c.laddr for c in psutil.net_connections(kind="tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port]
    assert [(a.ip, a.port) for a in listening] == [("127.0.0.1", port)]


def test_top_once_shows_both_agents_and_their_rates(cluster: LocalCluster, tmp_path: Path) -> None:
    config = tmp_path / "cluster.toml"
    text = cluster.config_path.read_text()
    for name in ("gen", "post"):
        # The cluster file says :0; `top` dials the ports the agents bound.
        text = text.replace(f"[agents.{name}]\n", f"[agents.{name}]\naddress = \"{cluster.address(name)}\"\n")
    config.write_text(text)
    out = subprocess.run([sys.executable, "-m", "artifex_agent", "top", "--config", str(config), "--once",
                          "--interval", "0.2"], capture_output=True, text=True, timeout=60,
                         env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert "gen" in out.stdout and "post" in out.stdout and "serving" in out.stdout
    assert "0.0·0.0" in out.stdout  # rates from two scrapes (idle now)

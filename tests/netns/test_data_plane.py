"""Frames go agent to agent, never through the coordinator: byte counts on a real link (network namespaces).

The coordinator runs inside host A. The kernel's counters of A's link interface count
every byte between A and B, and A's loopback every byte between the coordinator and agent
a: a frame that passed through the coordinator would show on one of them.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from artifex_agent.coordinator.retry import REFUSALS
from artifex_agent.local_cluster import DEMO_MODEL
from tests.netns.rig import TwoHosts

pytestmark = [pytest.mark.netns, pytest.mark.slow]

W, H, FRAMES = 256, 256, 17
PAYLOAD = W * H * 3 * FRAMES  # 3.3 MB of RGB frames per job
# Progress events, health checks and results: a few kB a job. Far below a frame payload.
CONTROL_LIMIT = PAYLOAD // 20
# Keepalive (10 s + 5 s timeout, transport/options.py) notices a peer that stopped answering,
# usually within seconds here; once in a full run its ping queued behind blocked frame data and
# gRPC reported "ping timeout" only after 60 s. What this test holds is "bounded, not a hang".
BLACKHOLE_DEADLINE_S = 90.0


def _submit(rig: TwoHosts, config: Path, seed: int, *extra: str) -> dict[str, Any]:
    """One job through the coordinator (from inside host A, where it listens), followed to its end."""
    proc = rig.cli_in("a", ["submit", "a red fox", "--model", DEMO_MODEL, "--size", f"{W}x{H}", "--frames",
                            str(FRAMES), "--steps", "1", "--guidance", "1", "--seed", str(seed), "--wait", "--json",
                            "--no-progress", *extra], config=config, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    job: dict[str, Any] = json.loads(proc.stdout)
    assert job["state"] == "done", job
    return job


def test_a_job_generated_and_post_processed_on_b_moves_no_frame_bytes_over_the_link(rig: TwoHosts) -> None:
    _, config = rig.start_coordinator("a", {"b": ["generate", "post"]})
    link0 = rig.link_bytes("a")
    job = _submit(rig, config, seed=1)
    moved = rig.link_bytes("a") - link0
    print(f"b -> b: {moved} bytes on the link for {PAYLOAD} bytes of frames")  # shown with -s
    assert (job["agent"], job["post_agent"]) == ("b", "b"), job
    # Through the coordinator (the relay) this was 2x the payload: B -> A -> B.
    assert moved < CONTROL_LIMIT, f"{moved} bytes crossed the link for a job that stayed on b ({PAYLOAD} payload)"


def test_a_job_from_a_to_b_crosses_the_link_once_and_not_through_the_coordinator(rig: TwoHosts) -> None:
    _, config = rig.start_coordinator("a", {"a": ["generate"], "b": ["post"]})
    link0, local0 = rig.link_bytes("a"), rig.link_bytes("a", "lo")
    job = _submit(rig, config, seed=2)
    moved, local = rig.link_bytes("a") - link0, (rig.link_bytes("a", "lo") - local0) // 2
    print(f"a -> b: {moved} bytes on the link, {local} between the coordinator and a, for {PAYLOAD} of frames")
    assert (job["agent"], job["post_agent"]) == ("a", "b"), job
    assert PAYLOAD <= moved < 1.5 * PAYLOAD, f"{moved} bytes on the link for {PAYLOAD} of frames"
    # Agent a and the coordinator share host A: frames relayed by the coordinator would cross A's loopback.
    assert local < CONTROL_LIMIT, f"{local} bytes between the coordinator and agent a ({PAYLOAD} payload)"


def test_a_split_job_hands_off_between_the_agents_and_never_through_the_coordinator(rig: TwoHosts) -> None:
    _, config = rig.start_coordinator("a", {"a": ["generate"], "b": ["generate", "post"]})
    link0, local0 = rig.link_bytes("a"), rig.link_bytes("a", "lo")
    job = _submit(rig, config, 3, "--split", "experts", "--steps", "2")
    moved, local = rig.link_bytes("a") - link0, (rig.link_bytes("a", "lo") - local0) // 2
    print(f"split: {moved} bytes on the link, {local} between the coordinator and a, for {PAYLOAD} of frames")
    # One agent ran the high-noise step and handed its latents to the other, which decoded and
    # post-processed them itself: the hand-off crossed the link once, the frames not at all.
    assert job["agent"] == job["post_agent"], job
    assert moved < PAYLOAD // 2, f"{moved} bytes on the link: frames crossed it ({PAYLOAD} payload)"
    # Through the old split client the hand-off went a -> coordinator (A's loopback) -> b.
    assert local < CONTROL_LIMIT, f"{local} bytes between the coordinator and agent a ({PAYLOAD} payload)"


@pytest.mark.skipif(shutil.which("nft") is None, reason="nftables is not installed")
def test_a_blackholed_link_ends_the_generating_agents_delivery_with_an_error_not_a_hang(rig: TwoHosts) -> None:
    # Upscaled 4x and encoded, b takes seconds over the frames: the link is cut while they flow.
    client = rig.popen_in("a", ["-m", "tests.netns.deliver_client", rig.a.address, rig.token, "b", DEMO_MODEL,
                                "--size", f"{W}x{H}", "--frames", str(FRAMES), "--upscale", "4",
                                "--job-id", f"blackhole-{time.time_ns()}"])
    assert client.stdout is not None
    try:
        first = client.stdout.readline().strip()
        assert first == "streaming", first + client.communicate(timeout=60)[1][-3000:]
        with rig.blackhole() as dropped:
            out, err = client.communicate(timeout=BLACKHOLE_DEADLINE_S + 30)
            lost = dropped()
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    result = json.loads(out.strip().splitlines()[-1])
    print(f"blackholed: {result}")
    assert lost > 0, "nftables dropped nothing: the link was not cut"
    assert not result["ok"], result
    assert result["after_streaming_s"] < BLACKHOLE_DEADLINE_S, result
    # What the coordinator needs to retry the post stage elsewhere without generating again.
    assert result["code"] and grpc.StatusCode[result["code"]] not in REFUSALS, (result, err[-2000:])
    assert result.get("held"), result  # a DeliveryResult, not the whole call failing

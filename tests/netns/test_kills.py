"""kill -9 an agent while its frames cross the link: the job finishes on the other host, nothing half-written.

The coordinator runs inside host A; agent a generates and delivers to agent b over the veth
link, and b upscales 4x and encodes (seconds: the frames are still flowing when the kill
comes). A killed post agent: a still holds the frames, so only the post stage runs again, on
a, without generating. A killed generating agent: b's stream ends without its trailer, b
drops what it had, and the job runs whole again on b.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from artifex_agent.local_cluster import DEMO_MODEL
from tests.netns.rig import COORDINATOR_PORT, TwoHosts
from tests.netns.test_data_plane import FRAMES, H, W

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def _run(rig: TwoHosts, seed: int, victim: str,
         when: Callable[[dict[str, Any]], bool]) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """Submit a job from inside A, kill -9 agent `victim` at the first event `when` picks; (events, job, kill)."""
    spec = {"prompts": ["a red fox"], "model": DEMO_MODEL, "width": W, "height": H, "frames": FRAMES, "steps": 1,
            "guidance": 1.0, "seed": seed, "upscale": 4}
    client = rig.popen_in("a", ["-m", "tests.netns.job_client", f"127.0.0.1:{COORDINATOR_PORT}", rig.token,
                                json.dumps(spec)])
    assert client.stdout is not None
    events: list[dict[str, Any]] = []
    final: dict[str, Any] = {}
    killed_at = ""
    deadline = time.monotonic() + 240
    try:
        for line in client.stdout:
            event = json.loads(line)
            if "final" in event:
                final = event["final"]
                break
            if "job_id" in event:
                continue
            events.append(event)
            if not killed_at and when(event):
                rig.agents[victim].kill()
                killed_at = f"{event['stage']} {event['step']}/{event['total']}"
            assert time.monotonic() < deadline, events[-5:]
    finally:
        if client.poll() is None:
            client.kill()
        _, err = client.communicate(timeout=30)
    assert final, err[-3000:]
    return events, final, killed_at


def _posting_on_b(event: dict[str, Any]) -> bool:
    """b has some of the frames and is upscaling them; more are on their way."""
    return event["kind"] == "progress" and event["agent"] == "b" and event["stage"] == "post" and event["step"] > 0


def _outputs(rig: TwoHosts, key: str, job_id: str) -> list[Path]:
    """Every file of the job under agent `key`'s output root, temporaries included."""
    return sorted(p for p in (rig.workdir / "outputs" / key).rglob(f"*{job_id}*") if p.is_file())


def test_a_post_agent_killed_mid_stream_is_replaced_without_generating_again(rig: TwoHosts) -> None:
    rig.start_coordinator("a", {"a": ["generate"], "b": ["post"]})
    events, job, killed_at = _run(rig, seed=31, victim="b", when=_posting_on_b)
    assert killed_at, "b finished before it could be killed"
    assert job["state"] == "done", job
    assert (job["agent"], job["post_agent"], job["attempts"]) == ("a", "a", 2), job
    retried = [e["message"] for e in events if e["kind"] == "state" and "attempt 2" in e["message"]]
    assert retried and "from the frames a holds (no new generation)" in retried[0], retried
    # Nothing of the job on b: its temporary went with its stream (or waits for b's next start).
    assert not [p for p in _outputs(rig, "b", job["id"]) if ".tmp" not in p.parts], _outputs(rig, "b", job["id"])
    done = _outputs(rig, "a", job["id"])
    assert [p.suffix for p in done] == [".mp4"], done


def test_a_generating_agent_killed_mid_stream_leaves_the_job_to_the_other_host(rig: TwoHosts) -> None:
    rig.start_coordinator("a", {"a": ["generate"], "b": ["post"]})
    events, job, killed_at = _run(rig, seed=32, victim="a", when=_posting_on_b)
    assert killed_at, "a finished delivering before it could be killed"
    assert job["state"] == "done", job
    assert (job["agent"], job["post_agent"], job["attempts"]) == ("b", "b", 2), job
    # The first attempt's stream ended without its trailer: b kept nothing of it.
    files = _outputs(rig, "b", job["id"])
    assert [p.suffix for p in files] == [".mp4"], files

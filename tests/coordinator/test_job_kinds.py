"""Job kinds that were direct mode only, through a real coordinator and real agents (issue 13, point 4)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import av
import pytest

from artifex_agent.errors import RequestError
from artifex_agent.local_cluster import LocalCluster
from tests.coordinator.conftest import Coordinator, spec


def _frames(path: str) -> int:
    with av.open(path) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.mark.parametrize("split, fields, output_agent", [
    # The Deliver goes to the agent whose half makes the output: the low-noise expert (b) ...
    ("experts", {}, "b"),
    # ... or CFG's conditional half (a), which needs guidance.
    ("cfg", {"guidance": 3.0}, "a"),
])
def test_a_split_job_runs_on_both_agents_through_the_queue(coordinator: Coordinator, split: str,
                                                          fields: dict[str, Any], output_agent: str) -> None:
    with coordinator.client() as client:
        coordinator.wait_for_agents(client)
        job_id = client.submit(spec("a split fox", seed=11, split=split, **fields))
        job = client.wait(job_id, timeout=60)
        assert job.state == "done", job.error
        assert [Path(p).exists() for p in job.outputs] == [True]
        assert _frames(job.outputs[0]) == 5
        assert job.agent == output_agent, job
        messages = [e.message for e in client.watch(job_id, history=True, timeout=10)]
    assert any(f"split '{split}' on a + b" in m for m in messages), messages


def test_decode_on_post_job_sends_latents_to_the_post_agent(coordinator: Coordinator) -> None:
    with coordinator.client() as client:
        coordinator.wait_for_agents(client)
        job = client.wait(client.submit(spec("a decoded fox", seed=12, decode_on="post")), timeout=60)
        assert job.state == "done", job.error
        assert job.post_agent == "b"
        assert _frames(job.outputs[0]) == 5


I2V = "wan2.2-tiny-i2v-a14b"


@pytest.fixture(scope="module")
def i2v_agents(agents: LocalCluster) -> LocalCluster:
    """The shared agents with the tiny i2v checkpoint beside the t2v one (built before any coordinator asks)."""
    from artifex_agent.engines.checkpoint import ensure_tiny_checkpoint

    ensure_tiny_checkpoint(agents.models_root, name=I2V, variant="i2v-a14b")
    return agents


def _png(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (20, 12), (200, 30, 30)).save(path, format="PNG")
    return path


@pytest.mark.slow  # the CLI in a process of its own
def test_submit_image_goes_with_the_job_through_the_coordinator(i2v_agents: LocalCluster, coordinator: Coordinator,
                                                               tmp_path: Path) -> None:
    # The image exists only here, under no agent's inputs folder: its bytes travel with the job.
    image = _png(tmp_path / "first.png")
    assert not any(image.is_relative_to(a.inputs_root) for a in i2v_agents.config.agents)
    flags = ["--model", I2V, "--size", "16x16", "--frames", "5", "--steps", "1", "--guidance", "1", "--seed", "5",
             "--config", str(coordinator.config), "--image", str(image), "--wait", "--no-progress", "--json"]
    with coordinator.client() as client:
        coordinator.wait_for_agents(client)
    done = subprocess.run([sys.executable, "-m", "artifex_agent", "submit", "it moves", *flags], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr + coordinator.log()[-3000:]
    job = json.loads(done.stdout)
    assert job["state"] == "done" and _frames(job["outputs"][0]) == 5
    # Read back, a job does not carry the image's bytes (a List page holds many jobs).
    assert "image_data" not in job["spec"]


def _frame_folder(root: Path, name: str, count: int = 4) -> Path:
    import numpy as np
    from PIL import Image

    folder = root / name
    folder.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(folder / f"{i:04d}.png")
    return folder


@pytest.mark.slow  # kills an agent (restarted after the test)
def test_frame_folder_job_fails_over_when_its_post_agent_is_down(agents: LocalCluster,
                                                                 coordinator_factory: Any) -> None:
    # The frames lie on the share both agents read (their inputs root); the job names them relative to it.
    folder = _frame_folder(agents.workdir / "inputs", f"drop-{time.monotonic_ns()}/shot")
    coordinator = coordinator_factory()
    with coordinator.client() as client:
        coordinator.wait_for_agents(client)
        agents.children["b"].kill()  # b prefers post-processing: the job would go there
        rel = folder.relative_to(agents.workdir / "inputs").as_posix()
        job = client.wait(client.submit({"prompts": [], "post_input": rel, "fps": 8.0, "output": "frames/shot"}),
                          timeout=60)
    assert job.state == "done", job.error
    assert job.post_agent == "a" and _frames(job.outputs[0]) == 4


def test_post_input_outside_the_inputs_root_is_refused(refusing_coordinator: Coordinator) -> None:
    with refusing_coordinator.client() as client:
        for bad in ("../outputs/a", "/etc", "x/../../y"):
            with pytest.raises(RequestError, match="post_input"):
                client.submit({"prompts": [], "post_input": bad})
        assert client.list() == []

"""The command line: `coordinator` start-up failures and graceful stop, `submit` through it, `jobs`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from artifex_agent.errors import ExitCode
from artifex_agent.local_cluster import DEMO_MODEL
from tests.coordinator.conftest import Coordinator, spec, wait_stage


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "artifex_agent", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_a_bad_config_is_a_startup_failure(tmp_path: Path) -> None:
    missing = cli("coordinator", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == ExitCode.STARTUP_FAILURE, missing.stderr
    assert "does not exist" in missing.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[coordinator]\nbatch_sise = 4\n")
    result = cli("coordinator", "--config", str(bad))
    assert result.returncode == ExitCode.STARTUP_FAILURE and "batch_sise" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_submit_wait_and_jobs_commands(coordinator: Coordinator) -> None:
    config = str(coordinator.config)
    job_flags = ["--model", DEMO_MODEL, "--size", "16x16", "--frames", "5", "--steps", "1", "--guidance", "1",
                 "--seed", "77", "--config", config]
    queued = cli("submit", "a cat on a boat", *job_flags)
    assert queued.returncode == 0, queued.stderr
    job_id = queued.stdout.strip()
    waited = cli("submit", "a dog on a boat", *job_flags, "--wait", "--no-progress")
    assert waited.returncode == 0, waited.stderr
    assert "done" in waited.stdout and "output: " in waited.stdout and ".mp4" in waited.stdout
    listed = cli("jobs", "--json", "--config", config)
    assert listed.returncode == 0, listed.stderr
    jobs: list[dict[str, Any]] = json.loads(listed.stdout)
    assert job_id in [j["id"] for j in jobs] and len(jobs) == 2
    watched = cli("jobs", "watch", job_id, "--no-progress", "--config", config)
    assert watched.returncode == 0 and "done" in watched.stderr
    shown = cli("jobs", "show", "nope", "--config", config)
    assert shown.returncode == ExitCode.FAILURE and "no job" in shown.stderr


@pytest.mark.slow
def test_sigterm_stops_gracefully_and_the_running_job_resumes_after_restart(coordinator_factory: Any) -> None:
    coordinator = coordinator_factory(roles={"a": ["generate", "post"], "b": ["post"]}, grace=0.2)
    with coordinator.client() as client:
        coordinator.wait_for_agents(client)
        # Long enough (over a second even on an idle CPU) not to finish within the 0.2 s grace.
        job_id = client.submit(spec("a long road", width=128, height=128, frames=41, steps=200, seed=9))
        wait_stage(client, job_id, ("denoise",))
    assert coordinator.stop() == 0
    coordinator.start()
    with coordinator.client() as client:
        job = client.wait(job_id, timeout=60)
        assert job.state == "done" and job.attempts == 1
        messages = [e.message for e in client.watch(job_id, history=True)]
    assert any("shutting down" in m for m in messages), messages


def _submit_args(*argv: str) -> Any:
    from artifex_agent.cli.main import build_parser

    return build_parser().parse_args(["submit", "a fox", "--seed", "1", *argv])


def test_submit_lora_scheduler_and_preset_flags_make_the_job() -> None:
    from artifex_agent.cli.submit import spec_from_args
    from artifex_agent.config import ClusterConfig
    from artifex_agent.lora_ref import LoraRef

    args = _submit_args("--lora", "ink:0.8:high", "--lora", "grain", "--scheduler", "euler", "--shift", "5",
                        "--boundary", "0.9", "--encode-preset", "slow", "--preset", "fast", "--steps", "6")
    job = spec_from_args(args, ClusterConfig())
    assert job.loras == [LoraRef("ink", 0.8, "high"), LoraRef("grain")]
    assert (job.scheduler, job.shift, job.boundary_ratio, job.encode_preset, job.preset) == (
        "euler", 5.0, 0.9, "slow", "fast")
    # Flags not given stay unset, for the coordinator to fill from the preset.
    assert job.given("steps") and not job.given("guidance")


def test_a_bad_lora_flag_is_a_usage_error() -> None:
    result = cli("submit", "a fox", "--lora", "ink:9")
    assert result.returncode == 2 and "outside" in result.stderr and "Traceback" not in result.stderr


def test_direct_mode_resolves_the_preset_itself() -> None:
    from artifex_agent.cli.jobargs import job_fields, to_messages
    from artifex_agent.jobspec import JobSpec
    from artifex_agent.presets import builtin, resolve

    args = _submit_args("--preset", "fast", "--encode-preset", "veryfast")
    request, post = to_messages(resolve(JobSpec.from_dict(job_fields(args)), builtin()))
    assert (request.steps, request.guidance_scale, request.scheduler, request.shift) == (4, 1.0, "euler", 5.0)
    assert [r.expert for r in request.loras] == ["high", "low"] and post.preset == "veryfast"

"""The time left a running job's agents estimate, in every terminal view: jobs, submit --wait's bars, top."""

from __future__ import annotations

import io
import re
import time

import pytest
from rich.console import Console

from artifex_agent.cli import jobs, top
from artifex_agent.cli.jobview import print_job
from artifex_agent.cli.progress import StageProgress
from artifex_agent.client import Job
from artifex_agent.jobspec import JobSpec
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb


def running(job_id: str, left_s: float | None) -> Job:
    job = Job.submitted(job_id, JobSpec(prompts=["a fox"]), time.time() - 30)
    job.start("a", "b", "", time.time() - 20)
    job.expected_end = None if left_s is None else time.time() + left_s
    return job


def test_jobs_lists_the_time_left_of_a_running_job(capsys: pytest.CaptureFixture[str]) -> None:
    jobs.print_table([running("fast00000001", 95.0), running("new000000002", None)])
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "1 min 3" in lines["fast00000001"] and "s left" in lines["fast00000001"]
    assert "left" not in lines["new000000002"]  # no agent has estimated it yet: nothing made up
    print_job(running("fast00000001", 40.0))
    assert re.search(r"^  (40|39) s left \(its agents' estimate\)$", capsys.readouterr().out, re.M)


def test_the_wait_bars_show_the_agents_estimate_and_top_shows_it_beside_the_step() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=120)
    with StageProgress(console) as bars:
        bars.update("generate", pb.Progress(current_stage=pb.STAGE_DENOISE, step=4, total=40, eta_s=150.0))
        bars.progress.refresh()
    assert "2 min 30 s left" in out.getvalue()
    table = top.jobs_table([top.JobRow(running("topjob000001", 12.0), "denoise", 4, 40, "a")], "", time.time())
    text = io.StringIO()
    Console(file=text, width=200).print(table)
    assert re.search(r"denoise 4/40 \(10%\) · 1[12] s left", text.getvalue())

"""One job on a terminal: as JSON data, as text, and followed live with a bar per stage."""

from __future__ import annotations

import datetime
from typing import Any

from rich.console import Console

from artifex_agent.cli.progress import StageProgress
from artifex_agent.client import Job, JobsClient
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.wire_enums import stage_to_pb

STATE_COLORS = {"queued": "cyan", "running": "yellow", "done": "green", "failed": "red", "cancelled": "magenta"}


def job_dict(job: Job) -> dict[str, Any]:
    """A job as plain JSON-able data."""
    out = {k: v for k, v in vars(job).items() if k != "spec"}
    out["spec"] = job.spec.to_dict()
    return out


def clock(ts: float | None) -> str:
    """A timestamp as HH:MM:SS local time; empty when unset."""
    return datetime.datetime.fromtimestamp(ts).strftime("%H:%M:%S") if ts else ""


def took(job: Job) -> str:
    """How long the job ran, once it has finished."""
    if job.started and job.finished:
        return f"{job.finished - job.started:.1f}s"
    return ""


def print_job(job: Job) -> None:
    """One job in detail, as text."""
    print(f"job {job.id}: {job.state}" + (" (from the results cache)" if job.cached else ""))
    print(f"  prompt: {' | '.join(job.spec.prompts)}")
    print(f"  model {job.spec.model} {job.spec.width}x{job.spec.height} {job.spec.frames} frames "
          f"{job.spec.steps} steps, upscale {job.spec.upscale}, {job.spec.codec}")
    if job.spec.loras or job.spec.preset or job.spec.scheduler:
        print(f"  preset {job.spec.preset or '-'}, scheduler {job.spec.scheduler or 'model'}, "
              f"LoRAs {', '.join(map(str, job.spec.loras)) or 'none'}")
    if job.agent:
        print(f"  agents: generate {job.agent}, post {job.post_agent}; attempts {job.attempts}")
    print(f"  created {clock(job.created)}  started {clock(job.started)}  finished {clock(job.finished)}")
    for path in job.outputs:
        print(f"  output: {path}")
    if job.error:
        print(f"  error: {job.error}")


def follow(client: JobsClient, job_id: str, progress: bool = True) -> Job:
    """Watch a job to its end: a bar per stage (generating step k/n, streaming, post-processing)."""
    console = Console(stderr=True)
    with StageProgress(console, enabled=progress) as bars:
        for event in client.watch(job_id):
            if event.kind == "progress":
                source = "post" if event.stage in ("receive", "post") else "generate"
                bars.update(source, pb.Progress(current_stage=stage_to_pb(event.stage), step=event.step,
                                                total=event.total))
            else:
                text = f"job {job_id}" + (f" ({event.job.stage})" if event.job and event.job.stage else "") \
                    if event.snapshot else event.message
                bars.console.print(f"[{STATE_COLORS.get(event.state, '')}]{event.state:9}[/] {text}", highlight=False)
                if event.kind == "state" and event.state == "done":
                    for task in bars.progress.tasks:  # the last progress events may have been thinned out
                        bars.progress.update(task.id, completed=task.total or task.completed)
    job = client.get(job_id)
    for path in job.outputs:
        console.print(f"output: {path}", highlight=False)
    if job.error and job.state != "done":
        console.print(f"[red]error:[/] {job.error}", highlight=False)
    return job

"""One job on a terminal: as JSON data, as text, and followed live with a bar per stage."""

from __future__ import annotations

import datetime
import shlex
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console

from artifex_agent.cli.progress import StageProgress
from artifex_agent.client import Job, JobEvent, JobsClient
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.timeleft import left
from artifex_agent.wire_enums import stage_to_pb

STATE_COLORS = {"queued": "cyan", "running": "yellow", "done": "green", "failed": "red", "cancelled": "magenta"}


def job_dict(job: Job) -> dict[str, Any]:
    """A job as plain JSON-able data."""
    out = {k: v for k, v in vars(job).items() if k != "spec"}
    out["spec"] = job.spec.to_dict()
    return out


def event_dict(event: JobEvent) -> dict[str, Any]:
    """An event as plain JSON-able data (without the job it may carry, or a preview's bytes)."""
    return {k: v for k, v in vars(event).items() if k not in ("job", "preview")}


def clock(ts: float | None) -> str:
    """A timestamp as HH:MM:SS local time; empty when unset."""
    return datetime.datetime.fromtimestamp(ts).strftime("%H:%M:%S") if ts else ""


def took(job: Job, now: float | None = None) -> str:
    """How long the job ran once it has finished, and how long it waited in the queue before; while it runs,
    the time left its agents estimate."""
    if job.started and job.finished:
        ran = f"{job.finished - job.started:.1f}s"
        return f"{ran} +{job.queued_s:.1f}s queued" if job.queued_s >= 0.05 else ran
    return left(job, time.time() if now is None else now)


def print_job(job: Job, history: list[JobEvent] | None = None) -> None:
    """One job in detail, as text; then what happened to it, oldest first, when `history` is given."""
    print(f"job {job.id}: {job.state}" + (" (from the results cache)" if job.cached else ""))
    print(f"  prompt: {' | '.join(job.spec.prompts)}")
    print(f"  model {job.spec.model} {job.spec.width}x{job.spec.height} {job.spec.frames} frames "
          f"{job.spec.steps} steps, upscale {job.spec.upscale}, {job.spec.codec}")
    if job.spec.loras or job.spec.preset or job.spec.scheduler:
        print(f"  preset {job.spec.preset or '-'}, scheduler {job.spec.scheduler or 'model'}, "
              f"LoRAs {', '.join(map(str, job.spec.loras)) or 'none'}")
    if job.agent:
        print(f"  agents: generate {job.agent}, post {job.post_agent}; attempts {job.attempts}")
    print(f"  created {clock(job.created)}  started {clock(job.started)}  finished {clock(job.finished)}"
          + (f"  queued {job.queued_s:.1f}s" if job.queued_s else ""))
    if job.waiting:
        print(f"  {job.why_waiting(time.time())}")
    estimate = left(job, time.time())
    if estimate:
        print(f"  {estimate} (its agents' estimate)")
    for path in job.outputs:
        print(f"  output: {path}")
    if job.error:
        print(f"  error: {job.error}")
    if history:
        print("  events:")
    for event in history or []:
        where = " ".join(filter(None, (event.stage if event.stage != event.state else "", event.agent)))
        print(f"    {clock(event.time)}  {event.state:9}  {where:16}  {event.message}".rstrip())


def follow(client: JobsClient, job_id: str, progress: bool = True, config: str | None = None,
           on_preview: Callable[[JobEvent], object] | None = None) -> Job:
    """Watch a job to its end: a bar per stage (generating step k/n, streaming, post-processing), with the
    time left; each live preview (the newest one first, for a job already running) goes to `on_preview`.

    Ctrl+C stops watching, not the job: it says so, with the commands to watch or cancel it (`config`: the
    --config to repeat in them).
    """
    console = Console(stderr=True)
    try:
        job = _follow(client, job_id, console, progress, on_preview)
    except KeyboardInterrupt:
        flag = f" --config {shlex.quote(str(config))}" if config else ""
        console.print(f"\nstopped watching; job {job_id} goes on at the coordinator.\n"
                      f"  watch it:  artifex-agent jobs watch {job_id}{flag}\n"
                      f"  cancel it: artifex-agent jobs cancel {job_id}{flag}", highlight=False, markup=False,
                      soft_wrap=True)
        raise
    for path in job.outputs:
        console.print(f"output: {path}", highlight=False)
    if job.error and job.state != "done":
        console.print(f"[red]error:[/] {job.error}", highlight=False)
    return job


def _follow(client: JobsClient, job_id: str, console: Console, progress: bool,
            on_preview: Callable[[JobEvent], object] | None) -> Job:
    with StageProgress(console, enabled=progress) as bars:
        for event in client.watch(job_id):
            if event.preview and on_preview is not None:
                on_preview(event)
            if event.kind == "progress":
                source = "post" if event.stage in ("receive", "post") else "generate"
                bars.update(source, pb.Progress(current_stage=stage_to_pb(event.stage), step=event.step,
                                                total=event.total, eta_s=event.eta_s))
            else:
                text = f"job {job_id}" + (f" ({event.job.stage})" if event.job and event.job.stage else "") \
                    + (f": {event.job.why_waiting(event.time)}" if event.job and event.job.waiting else "") \
                    if event.snapshot else event.message
                bars.console.print(f"[{STATE_COLORS.get(event.state, '')}]{event.state:9}[/] {text}", highlight=False)
                if event.kind == "state" and event.state == "done":
                    bars.finish()
    return client.get(job_id)

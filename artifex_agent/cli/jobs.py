"""`artifex-agent jobs [list|show|watch|cancel|retry] [ID]`: the coordinator's queue from a terminal."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from artifex_agent.cli.options import add_config, env
from artifex_agent.cli.progress import StageProgress
from artifex_agent.client import Job, JobsClient
from artifex_agent.errors import ExitCode
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb

ACTIONS = ("list", "show", "watch", "cancel", "retry")
STATES = ("queued", "running", "done", "failed", "cancelled")
_COLORS = {"queued": "cyan", "running": "yellow", "done": "green", "failed": "red", "cancelled": "magenta"}


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "jobs", help="list the coordinator's jobs, or show, watch, cancel or retry one",
        description="Without an action: the newest jobs with state, agent and times.")
    add_config(p)
    p.add_argument("action", nargs="?", default="list", choices=ACTIONS)
    p.add_argument("job_id", nargs="?", metavar="ID", help="the job (for show, watch, cancel, retry)")
    p.add_argument("--state", action="append", choices=STATES, help="only jobs in this state (repeatable)")
    p.add_argument("--limit", type=int, default=env("--limit", 30),
                   help="how many jobs to list, newest first (0: all)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-progress", action="store_true", help="watch: event lines instead of progress bars")


def run(args: argparse.Namespace) -> int:
    with JobsClient.from_config(args.config) as client:
        if args.action == "list":
            jobs = client.list(args.state, args.limit)
            if args.json:
                print(json.dumps([job_dict(j) for j in jobs], indent=2))
            else:
                print_table(jobs)
            return int(ExitCode.OK)
        if not args.job_id:
            print(f"artifex-agent jobs {args.action}: give the job's ID", file=sys.stderr)
            return int(ExitCode.USAGE)
        if args.action == "watch":
            job = follow(client, args.job_id, progress=not args.no_progress and not args.json)
        else:
            job = {"show": client.get, "cancel": client.cancel, "retry": client.retry}[args.action](args.job_id)
        if args.json:
            print(json.dumps(job_dict(job), indent=2))
        elif args.action != "watch":
            print_job(job)
        return int(ExitCode.OK if job.state in ("done", "queued", "running") else ExitCode.FAILURE)


def job_dict(job: Job) -> dict[str, Any]:
    """A job as plain JSON-able data."""
    out = {k: v for k, v in vars(job).items() if k != "spec"}
    out["spec"] = job.spec.to_dict()
    return out


def _time(ts: float | None) -> str:
    return datetime.datetime.fromtimestamp(ts).strftime("%H:%M:%S") if ts else ""


def _took(job: Job) -> str:
    if job.started and job.finished:
        return f"{job.finished - job.started:.1f}s"
    return ""


def print_table(jobs: list[Job]) -> None:
    table = Table(box=None)
    for col in ("ID", "STATE", "STAGE", "AGENT", "CREATED", "TOOK"):
        table.add_column(col, no_wrap=True)
    for col in ("PROMPT", "OUTPUT / ERROR"):
        table.add_column(col, overflow="fold")
    for job in jobs:
        color = _COLORS.get(job.state, "")
        agents = f"{job.agent}→{job.post_agent}" if job.post_agent and job.post_agent != job.agent else job.agent
        detail = job.error if job.state == "failed" else ", ".join(job.outputs)
        table.add_row(job.id, f"[{color}]{job.state}[/]" + (" (cached)" if job.cached else ""), job.stage,
                      agents, _time(job.created), _took(job), job.spec.prompts[0][:40], detail)
    Console().print(table) if jobs else print("no jobs")


def print_job(job: Job) -> None:
    print(f"job {job.id}: {job.state}" + (" (from the results cache)" if job.cached else ""))
    print(f"  prompt: {' | '.join(job.spec.prompts)}")
    print(f"  model {job.spec.model} {job.spec.width}x{job.spec.height} {job.spec.frames} frames "
          f"{job.spec.steps} steps, upscale {job.spec.upscale}, {job.spec.codec}")
    if job.spec.loras or job.spec.preset or job.spec.scheduler:
        print(f"  preset {job.spec.preset or '-'}, scheduler {job.spec.scheduler or 'model'}, "
              f"LoRAs {', '.join(map(str, job.spec.loras)) or 'none'}")
    if job.agent:
        print(f"  agents: generate {job.agent}, post {job.post_agent}; attempts {job.attempts}")
    print(f"  created {_time(job.created)}  started {_time(job.started)}  finished {_time(job.finished)}")
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
                bars.update(source, pb.Progress(stage=event.stage, step=event.step, total=event.total))
            else:
                text = f"job {job_id}" + (f" ({event.job.stage})" if event.job and event.job.stage else "") \
                    if event.message == "now" else event.message
                bars.console.print(f"[{_COLORS.get(event.state, '')}]{event.state:9}[/] {text}", highlight=False)
                if event.kind == "state" and event.state == "done":
                    for task in bars.progress.tasks:  # the last progress events may have been thinned out
                        bars.progress.update(task.id, completed=task.total or task.completed)
    job = client.get(job_id)
    for path in job.outputs:
        console.print(f"output: {path}", highlight=False)
    if job.error and job.state != "done":
        console.print(f"[red]error:[/] {job.error}", highlight=False)
    return job

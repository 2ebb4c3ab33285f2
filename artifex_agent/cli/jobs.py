"""`artifex-agent jobs [list|show|watch|cancel|retry] [ID]`: the coordinator's queue from a terminal."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from rich.table import Table

from artifex_agent.cli.jobview import STATE_COLORS, clock, event_dict, follow, job_dict, print_job, took
from artifex_agent.cli.options import add_config, env
from artifex_agent.client import Job, JobEvent, JobsClient
from artifex_agent.coordinator.job import STATES
from artifex_agent.errors import ExitCode
from artifex_agent.terminal import table_console

ACTIONS = ("list", "show", "watch", "cancel", "retry")


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


# The states in which each action did what was asked; any other ends in exit 1 (README, "Exit codes").
SUCCEEDED = {"show": ("done", "queued", "running"), "watch": ("done",), "cancel": ("cancelled",),
             "retry": ("queued", "running", "done")}


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
        history: list[JobEvent] = []
        if args.action == "watch":
            job = follow(client, args.job_id, progress=not args.no_progress and not args.json, config=args.config)
        elif args.action == "show":
            job, history = client.get(args.job_id), past_events(client, args.job_id)
        else:
            job = {"cancel": client.cancel, "retry": client.retry}[args.action](args.job_id)
        if args.json:
            extra = {"events": [event_dict(e) for e in history]} if args.action == "show" else {}
            print(json.dumps({**job_dict(job), **extra}, indent=2))
        elif args.action != "watch":
            print_job(job, history)
        if job.state not in SUCCEEDED[args.action]:
            if args.action == "cancel":
                print(f"artifex-agent jobs cancel: job {job.id} had already ended ({job.state}); nothing to cancel",
                      file=sys.stderr)
            return int(ExitCode.FAILURE)
        return int(ExitCode.OK)


def past_events(client: JobsClient, job_id: str) -> list[JobEvent]:
    """What happened to the job so far (the coordinator's history, without its live events)."""
    events = []
    for event in client.watch(job_id, history=True):
        if event.snapshot:  # the job as it is now: the history is over
            break
        events.append(event)
    return events


def print_table(jobs: list[Job]) -> None:
    table = Table(box=None)
    for col in ("ID", "STATE", "STAGE", "AGENT", "CREATED", "TOOK"):
        table.add_column(col, no_wrap=True)
    for col in ("PROMPT", "OUTPUT / ERROR"):
        table.add_column(col, overflow="fold")
    for job in jobs:
        color = STATE_COLORS.get(job.state, "")
        agents = f"{job.agent}→{job.post_agent}" if job.post_agent and job.post_agent != job.agent else job.agent
        detail = job.error if job.state == "failed" else job.why_waiting(time.time()) or ", ".join(job.outputs)
        table.add_row(job.id, f"[{color}]{job.state}[/]" + (" (cached)" if job.cached else ""), job.stage,
                      agents, clock(job.created), took(job), job.spec.prompts[0][:40], detail)
    table_console().print(table) if jobs else print("no jobs")

"""`artifex-agent jobs [list|show|watch|cancel|retry] [ID]`: the coordinator's queue from a terminal."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from artifex_agent.cli.jobview import STATE_COLORS, clock, follow, job_dict, print_job, took
from artifex_agent.cli.options import add_config, env
from artifex_agent.client import Job, JobsClient
from artifex_agent.coordinator.job import STATES
from artifex_agent.errors import ExitCode

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


def print_table(jobs: list[Job]) -> None:
    table = Table(box=None)
    for col in ("ID", "STATE", "STAGE", "AGENT", "CREATED", "TOOK"):
        table.add_column(col, no_wrap=True)
    for col in ("PROMPT", "OUTPUT / ERROR"):
        table.add_column(col, overflow="fold")
    for job in jobs:
        color = STATE_COLORS.get(job.state, "")
        agents = f"{job.agent}→{job.post_agent}" if job.post_agent and job.post_agent != job.agent else job.agent
        detail = job.error if job.state == "failed" else ", ".join(job.outputs)
        table.add_row(job.id, f"[{color}]{job.state}[/]" + (" (cached)" if job.cached else ""), job.stage,
                      agents, clock(job.created), took(job), job.spec.prompts[0][:40], detail)
    Console().print(table) if jobs else print("no jobs")

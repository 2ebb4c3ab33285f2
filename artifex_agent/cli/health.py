"""`artifex-agent health`: check every agent, the links between them, the shares; exit 0 only when healthy."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from artifex_agent.cli.options import add_config, env
from artifex_agent.config import ClusterConfig
from artifex_agent.errors import ExitCode


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "health", help="check agents, links (RTT, bandwidth, MTU), GPUs, models, shares; exit 4 when unhealthy",
        description="One table of checks with the figure, the target and what to do: every agent, the link "
                    "between every pair of agents the coordinator may use (measured by the agents, pairs on "
                    "different PCs at once), the coordinator and the watcher. Exit code 0 only when every "
                    "required check passes (4 otherwise).")
    add_config(p)
    p.add_argument("--json", action="store_true", default=env("--json", False), help="print JSON instead of a table")
    p.add_argument("--quick", action="store_true", default=env("--quick", False),
                   help="skip the bandwidth and share throughput tests [ARTIFEX_QUICK]")
    p.add_argument("--seconds", type=float, default=env("--seconds", 2.0),
                   help="seconds per direction of each bandwidth test (default 2)")
    p.add_argument("--rtt-count", type=int, default=env("--rtt-count", 500),
                   help="round trips per RTT test (default 500)")
    p.add_argument("--connect-timeout", type=float, default=env("--connect-timeout", 1.0),
                   help="seconds an agent gets to answer before it counts as unreachable (default 1)")
    p.add_argument("--pair-budget", type=float, default=env("--pair-budget", 60.0),
                   help="seconds all agent-to-agent RTT and bandwidth tests together may take; pairs left over "
                        "show as not measured (default 60) [ARTIFEX_PAIR_BUDGET]")


def run(args: argparse.Namespace) -> int:
    from artifex_agent.health.checks import run_health
    from artifex_agent.health.render import render

    cluster = ClusterConfig.load(args.config)
    report = asyncio.run(run_health(cluster, quick=args.quick, seconds=args.seconds, rtt_count=args.rtt_count,
                                    connect_timeout=args.connect_timeout, pair_budget_s=args.pair_budget))
    render(report, as_json=args.json)
    return int(ExitCode.OK if report.ok else ExitCode.UNHEALTHY)

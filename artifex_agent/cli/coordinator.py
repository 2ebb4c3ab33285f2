"""`artifex-agent coordinator`: run the job queue in front of the agents until stopped."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from artifex_agent.cli.options import add_config, env
from artifex_agent.config import ClusterConfig
from artifex_agent.lifecycle import serve

logger = logging.getLogger(__name__)


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "coordinator", help="run the job queue (Jobs service, SQLite) that feeds the agents",
        description="Accepts jobs (submit, the drop folder, scripts), stores them durably, batches and routes "
                    "them over the agents of the cluster file, and retries what a dead agent interrupted.")
    add_config(p)
    p.add_argument("--listen", default=env("--listen"), help="override [coordinator] listen host:port")
    p.add_argument("--database", default=env("--database"), type=Path, help="override [coordinator] database")
    p.add_argument("--insecure", action="store_true", default=env("--insecure", False),
                   help="allow a non-loopback listen address without a token")
    p.add_argument("--port-file", default=env("--port-file"), type=Path,
                   help="write the bound port here once serving (for --listen host:0)")
    p.add_argument("--grace", default=env("--grace", 10.0), type=float,
                   help="seconds running jobs get to finish on stop (the rest are requeued)")


def build_config(args: argparse.Namespace) -> ClusterConfig:
    cluster = ClusterConfig.load(args.config)
    if args.listen:
        cluster.coordinator.listen = args.listen
    if args.database:
        cluster.coordinator.database = args.database
    if args.insecure:
        cluster.security.insecure = True
    cluster.validate()
    return cluster


def run(args: argparse.Namespace) -> int:
    from artifex_agent.coordinator.server import Coordinator

    return serve(Coordinator(build_config(args), grace_s=args.grace), port_file=args.port_file)

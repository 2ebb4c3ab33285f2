"""`artifex-agent serve`: run this PC's agent until stopped."""

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
        "serve", help="run the agent (Generate, PostProcess, Diagnostics, Health)")
    add_config(p)
    p.add_argument("--name", default=env("--name"), help="which [agents.NAME] this process is [ARTIFEX_NAME]")
    p.add_argument("--listen", default=env("--listen"), help="override the listen address host:port")
    p.add_argument("--models-root", default=env("--models-root"), type=Path, help="override models_root")
    p.add_argument("--output-root", default=env("--output-root"), type=Path, help="override output_root")
    p.add_argument("--device", default=env("--device"), choices=["auto", "cuda", "cpu"])
    p.add_argument("--torch-threads", default=env("--torch-threads", 0), type=int, help="torch threads (0: default)")
    p.add_argument("--insecure", action="store_true", default=env("--insecure", False),
                   help="allow a non-loopback listen address without a token")
    p.add_argument("--port-file", default=env("--port-file"), type=Path,
                   help="write the bound port here once serving (for --listen host:0)")
    p.add_argument("--grace", default=env("--grace", 30.0), type=float, help="seconds streams get to finish on stop")


def build_agent_config(args: argparse.Namespace) -> tuple[ClusterConfig, Any]:
    cluster = ClusterConfig.load(args.config)
    cfg = cluster.agent(args.name)
    overrides = {"listen": args.listen, "models_root": args.models_root, "output_root": args.output_root,
                 "device": args.device, "torch_threads": args.torch_threads or None}
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    if args.insecure:
        cluster.security.insecure = True
    cluster.validate()
    return cluster, cfg


def run(args: argparse.Namespace) -> int:
    from artifex_agent.server import Agent

    cluster, cfg = build_agent_config(args)
    return serve(Agent(cluster, cfg, grace_s=args.grace), port_file=args.port_file)

"""`artifex-agent submit`: one job straight to two agents (generate on one, post on the other)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from artifex_agent.cli.jobargs import add_job_arguments, to_messages
from artifex_agent.cli.options import add_config, env
from artifex_agent.cli.progress import StageProgress
from artifex_agent.config import ClusterConfig
from artifex_agent.relay import RelayResult, generate_and_post
from artifex_agent.transport.channel import AgentStub, open_channel


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "submit", help="generate a clip on one agent and post-process it on another",
        description="Runs one job directly on two agents named in the cluster file.")
    add_config(p)
    add_job_arguments(p)
    p.add_argument("--generate-on", default=env("--generate-on"), help="agent that generates (default: first)")
    p.add_argument("--post-on", default=env("--post-on"), help="agent that post-processes (default: last)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    cluster = ClusterConfig.load(args.config)
    gen_cfg = cluster.agent(args.generate_on) if args.generate_on else cluster.agents[0]
    post_cfg = cluster.agent(args.post_on) if args.post_on else cluster.agents[-1]
    request, spec = to_messages(args)
    result = asyncio.run(run_direct(cluster, gen_cfg.name, post_cfg.name, request, spec,
                                    progress=not args.no_progress))
    print_result(result)
    return 0


async def run_direct(cluster: ClusterConfig, gen_name: str, post_name: str, request: Any, spec: Any,
                     progress: bool = True) -> RelayResult:
    """Relay one job between two configured agents with progress bars."""
    token = cluster.security.resolved_token()
    gen_cfg, post_cfg = cluster.agent(gen_name), cluster.agent(post_name)
    gen_ch = open_channel(gen_cfg.dial_address, cluster.security)
    post_ch = gen_ch if post_cfg.dial_address == gen_cfg.dial_address else \
        open_channel(post_cfg.dial_address, cluster.security)
    try:
        with StageProgress(enabled=progress) as bars:
            return await generate_and_post(AgentStub(gen_ch, token), AgentStub(post_ch, token), request, spec,
                                           bars.update, gen_name=gen_name, post_name=post_name)
    finally:
        await gen_ch.close()
        if post_ch is not gen_ch:
            await post_ch.close()


def print_result(r: RelayResult) -> None:
    res = r.result
    for path, digest in zip(res.output_paths, res.sha256, strict=False):
        print(f"output: {path}  sha256 {digest[:16]}…")
    print(f"frames: {res.frames}  size: {res.width}x{res.height}  codec: {res.codec} ({res.encoder})  "
          f"bytes: {res.output_bytes}")
    stages = "  ".join(f"{k} {v:.2f}s" for k, v in r.stage_s.items())
    print(f"time: total {r.total_s:.2f}s  {stages}")

"""`artifex-agent models`: list the model folders an agent would find, or build the tiny one."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from artifex_agent.cli.options import add_config, env
from artifex_agent.config import ClusterConfig


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("models", help="list models, or build the tiny test checkpoint")
    add_config(p)
    p.add_argument("--name", default=env("--name"), help="agent whose models_root to list")
    p.add_argument("--build-tiny", type=Path, metavar="DIR",
                   help="write a tiny random-weight Wan2.2 checkpoint into DIR (offline)")
    p.add_argument("--variant", default="t2v-a14b", choices=["t2v", "t2v-a14b", "i2v-a14b", "ti2v"])


def run(args: argparse.Namespace) -> int:
    if args.build_tiny:
        from artifex_agent.engines.checkpoint import build_tiny_checkpoint

        path = build_tiny_checkpoint(args.build_tiny, variant=args.variant)
        print(f"wrote {path}")
        return 0
    from artifex_agent.engines.models import list_models

    cfg = ClusterConfig.load(args.config).agent(args.name)
    entries = list_models(cfg.models_root)
    if not entries:
        print(f"no models under {cfg.models_root}")
        return 1
    for m in entries:
        state = "ok" if m.complete else f"INCOMPLETE: {m.problem}"
        print(f"{m.name:32} {m.kind:8} {'two experts' if m.two_experts else '':12} {state}")
    return 0

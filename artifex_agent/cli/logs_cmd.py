"""`artifex-agent logs NAME`: the log of a process `artifex-agent up` started on this PC."""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from artifex_agent.cli.options import add_state_dir, env, state_dir
from artifex_agent.errors import ArtifexError, ExitCode


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "logs", help="print the log of a process `up` started here (an agent's name, coordinator, watcher)",
        description="Prints the last lines of the log `artifex-agent up` writes for each process it starts "
                    "(STATE_DIR/logs); without NAME, lists the logs there.")
    p.add_argument("name", nargs="?", metavar="NAME", help="an agent's name, coordinator or watcher")
    add_state_dir(p)
    p.add_argument("-n", "--lines", type=int, default=env("--lines", 50), help="how many lines (0: all)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing lines as they are written (Ctrl+C stops)")


def log_files(logs_dir: Path) -> dict[str, Path]:
    """Log files by the name a user gives: `up` names them agent-NAME.log, coordinator.log, watcher.log."""
    found = {}
    for path in sorted(logs_dir.glob("*.log")) if logs_dir.is_dir() else []:
        found[path.stem.removeprefix("agent-")] = path
    return found


def run(args: argparse.Namespace) -> int:
    logs_dir = state_dir(args) / "logs"
    found = log_files(logs_dir)
    if not args.name:
        if not found:
            print(f"no logs in {logs_dir} (`artifex-agent up` writes them)")
        for name, file in found.items():
            print(f"{name:16} {file}")
        return int(ExitCode.OK)
    path = found.get(args.name, found.get(args.name.removeprefix("agent-")))
    if path is None:
        known = ", ".join(found) or "none"
        raise ArtifexError(f"no log for {args.name!r} in {logs_dir} (there: {known}); "
                           "`artifex-agent up` writes one per process it starts")
    with path.open("r", encoding="utf-8", errors="replace") as log:
        tail = deque(log, maxlen=args.lines or None)
        sys.stdout.writelines(tail)
        sys.stdout.flush()
        while args.follow:
            line = log.readline()
            if line:
                sys.stdout.write(line)
                sys.stdout.flush()
            else:
                time.sleep(0.3)
    return int(ExitCode.OK)

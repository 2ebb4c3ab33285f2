"""`artifex-agent down`: stop what `artifex-agent up` started here, cleanly, via its pid files."""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from artifex_agent import daemon
from artifex_agent.cli.options import add_state_dir, env, state_dir
from artifex_agent.cli.processes import print_table
from artifex_agent.errors import ExitCode

# Stop in reverse dependency order: nothing new reaches the coordinator once the watcher is
# gone, and the agents finish the streams the coordinator started.
ORDER = ("watcher", "coordinator", "agent")


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "down", help="stop what `artifex-agent up` started on this PC (SIGTERM, then kill after --timeout)")
    add_state_dir(p)
    p.add_argument("--name", action="append", default=None, help="stop only this agent (repeatable)")
    p.add_argument("--timeout", type=float, default=env("--timeout", 45.0),
                   help="seconds each process gets to finish its streams before it is killed")


def run(args: argparse.Namespace) -> int:
    run_dir = state_dir(args) / "run"
    found = daemon.records(run_dir) if run_dir.is_dir() else []
    rows: list[dict[str, str]] = []
    if not found:
        print(f"nothing to stop (no pid files in {run_dir})")
        return int(ExitCode.OK)
    for kind in ORDER:
        group = [(p, r) for p, r in found if r is not None and r.kind == kind
                 and (not args.name or (kind == "agent" and r.name in args.name))]
        # Agents stop side by side: each may take up to --timeout to drain its streams.
        with ThreadPoolExecutor(max_workers=max(1, len(group))) as pool:
            results = list(pool.map(lambda item: _stop(item[0], item[1], args.timeout), group))
        rows += results
    for path, record in found:
        if record is None:
            path.unlink(missing_ok=True)
            rows.append({"process": path.stem, "pid": "?", "address": "", "state": "not running",
                         "log": "unreadable pid file removed"})
    print_table(rows, title="artifex-agent down")
    bad = [r for r in rows if r["state"].startswith("killed")]
    return int(ExitCode.FAILURE if bad else ExitCode.OK)


def _stop(path: Path, record: daemon.PidRecord, timeout: float) -> dict[str, str]:
    state = daemon.stop(record.pid, record.create_time, timeout)
    path.unlink(missing_ok=True)
    if record.port_file:
        Path(record.port_file).unlink(missing_ok=True)
    return {"process": record.label, "pid": str(record.pid), "address": record.address, "state": state,
            "log": record.log}

"""`artifex-agent watch`: drop-folder automation (job files and frame folders) on the shared cache."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from artifex_agent.cli.options import add_config, env
from artifex_agent.config import ClusterConfig
from artifex_agent.errors import ExitCode
from artifex_agent.lifecycle import serve


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "watch", help="watch the drop folder: submit job files, post-process frame folders",
        description="Watches [watcher] root: job files (.toml/.json) in inbox/ are submitted to the coordinator "
                    "once; frame folders and videos in frames/ are post-processed. See docs/watcher.md.")
    add_config(p)
    p.add_argument("--polling", action="store_true", default=env("--polling", False),
                   help="poll even on a local disk (default: poll only on network filesystems) [ARTIFEX_POLLING]")
    p.add_argument("--status", action="store_true", help="print what is pending, running, done and failed; exit")
    p.add_argument("--json", action="store_true", help="with --status: JSON")
    p.add_argument("--once", action="store_true", help="one pass (wait for what it started), then exit")


def run(args: argparse.Namespace) -> int:
    cluster = ClusterConfig.load(args.config)
    if args.status:
        from artifex_agent.watcher.status import collect, render

        status = collect(cluster)
        print(json.dumps(status, indent=2) if args.json else render(status))
        return int(ExitCode.OK)
    # A service's log says what it does: INFO unless -v asked for more.
    watcher_log = logging.getLogger("artifex_agent.watcher")
    if watcher_log.getEffectiveLevel() > logging.INFO:
        watcher_log.setLevel(logging.INFO)
    from artifex_agent.watcher.service import Watcher
    from artifex_agent.watcher.submitter import ModelCatalog, connect

    watcher = Watcher(cluster, connect(cluster), force_polling=args.polling, models=ModelCatalog(cluster).known)
    if args.once:
        return _once(watcher)
    return serve(watcher)


def _once(watcher: Any) -> int:
    """Two looks a settle time apart (what "complete" needs), then wait for the frames started."""
    import time

    watcher.startup()
    try:
        watcher.pass_once()
        time.sleep(watcher.settle_s + 0.05)
        watcher.pass_once()
        while not watcher.idle():
            time.sleep(0.1)
    finally:
        watcher.shutdown()
    return int(ExitCode.OK)


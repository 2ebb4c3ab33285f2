"""`artifex-agent`: parse the command line and dispatch to one module per subcommand."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from artifex_agent import __version__, logs
from artifex_agent.cli import certs, config_cmd, coordinator, demo, down, health, jobs, models, serve, submit, top, up
from artifex_agent.cli import watch as watch_cmd
from artifex_agent.cli.options import env
from artifex_agent.errors import ArtifexError, ExitCode

COMMANDS: dict[str, ModuleType] = {
    "serve": serve,
    "submit": submit,
    "coordinator": coordinator,
    "jobs": jobs,
    "demo": demo,
    "models": models,
    "health": health,
    "certs": certs,
    "config": config_cmd,
    "top": top,
    "up": up,
    "down": down,
    "watch": watch_cmd,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="artifex-agent",
        description="Two GPU PCs on one link as one Wan2.2 video farm. Every flag can also be set as "
                    "an environment variable ARTIFEX_<FLAG> (e.g. ARTIFEX_CONFIG, ARTIFEX_TOKEN).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("--log-format", choices=logs.FORMATS, default=env("--log-format", "text"),
                        help="text, or one JSON object per line with the job id (for journald/Loki) "
                             "[ARTIFEX_LOG_FORMAT]")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    services = ("serve", "coordinator", "watch")
    level = (logging.INFO if args.command in services else logging.WARNING) - 10 * args.verbose
    logs.setup(max(level, logging.DEBUG), args.log_format)
    if args.command == "serve":
        logs.component_var.set(getattr(args, "name", None) or "agent")
    elif args.command in ("coordinator", "watch"):
        logs.component_var.set(args.command)
    try:
        return int(COMMANDS[args.command].run(args))
    except ArtifexError as exc:
        print(f"artifex-agent {args.command}: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())

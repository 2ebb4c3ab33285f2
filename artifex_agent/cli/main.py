"""`artifex-agent`: parse the command line and dispatch to one module per subcommand."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from artifex_agent import __version__
from artifex_agent.cli import demo, models, serve, submit
from artifex_agent.errors import ArtifexError, ExitCode

COMMANDS: dict[str, ModuleType] = {
    "serve": serve,
    "submit": submit,
    "demo": demo,
    "models": models,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="artifex-agent",
        description="Two GPU PCs on one link as one Wan2.2 video farm. Every flag can also be set as "
                    "an environment variable ARTIFEX_<FLAG> (e.g. ARTIFEX_CONFIG, ARTIFEX_TOKEN).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * args.verbose if args.command not in ("serve",) else logging.INFO - 10 * args.verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(COMMANDS[args.command].run(args))
    except ArtifexError as exc:
        print(f"artifex-agent {args.command}: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())

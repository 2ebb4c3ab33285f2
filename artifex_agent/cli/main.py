"""`artifex-agent`: parse the command line and dispatch to one module per subcommand."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from artifex_agent import __version__, logs
from artifex_agent.cli import (
    certs,
    config_cmd,
    coordinator,
    demo,
    down,
    health,
    jobs,
    logs_cmd,
    models,
    serve,
    submit,
    top,
    up,
)
from artifex_agent.cli import watch as watch_cmd
from artifex_agent.cli.options import check_environment, env
from artifex_agent.cli.parser import Parser
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
    "logs": logs_cmd,
    "watch": watch_cmd,
}


def build_parser() -> Parser:
    parser = Parser(
        prog="artifex-agent",
        description="Two GPU PCs on one link as one Wan2.2 video farm. Every flag can also be set as "
                    "an environment variable ARTIFEX_<FLAG> (e.g. ARTIFEX_CONFIG, ARTIFEX_TOKEN).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("--log-format", choices=logs.FORMATS, default=env("--log-format", "text"),
                        help="text, or one JSON object per line with the job id (for journald/Loki) "
                             "[ARTIFEX_LOG_FORMAT]")
    # Subcommand parsers are of the same class (argparse's default parser_class): no abbreviations there either.
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def _environment_problems(parser: Parser, argv: Sequence[str]) -> list[str]:
    """Bad ARTIFEX_<FLAG> values for the command in `argv`, checked before parsing so they are named as
    variables, not as flags the user never typed; never for --help."""
    if any(arg in ("-h", "--help", "--version") for arg in argv):
        return []
    command = next((arg for arg in argv if arg in COMMANDS), None)
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return check_environment(parser, subparsers.choices.get(command) if command else None, argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    problems = _environment_problems(parser, argv)
    if problems:
        for problem in problems:
            print(f"artifex-agent: {problem}", file=sys.stderr)
        return int(ExitCode.USAGE)
    args = parser.parse_args(argv)
    services = ("serve", "coordinator", "watch")
    level = (logging.INFO if args.command in services else logging.WARNING) - 10 * args.verbose
    logs.setup(max(level, logging.DEBUG), args.log_format)
    if args.command == "serve":
        logs.component_var.set(getattr(args, "name", None) or "agent")
    elif args.command in ("coordinator", "watch"):
        logs.component_var.set(args.command)
    try:
        code = int(COMMANDS[args.command].run(args))
        sys.stdout.flush()  # here, not at exit: a reader that has gone (`| head -1`) is handled below
        return code
    except ArtifexError as exc:
        print(f"artifex-agent {args.command}: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # The reader closed the pipe (`jobs show ID | head -1`): it had what it wanted. Point stdout at
        # devnull so the interpreter's final flush does not raise again (Python's documented recipe).
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass  # stdout is no file (replaced in process): nothing will flush it at exit
        return int(ExitCode.OK)


if __name__ == "__main__":
    sys.exit(main())

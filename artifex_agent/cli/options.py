"""Flags shared by subcommands; each also reads ARTIFEX_<FLAG> from the environment."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from artifex_agent.config import default_home

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")

# Flags whose default env() looked up; check_environment validates only these (ARTIFEX_TOKEN, ARTIFEX_HOME...
# are read elsewhere and are no flag's value).
_FROM_ENV: set[str] = set()


def env_name(flag: str) -> str:
    """--frames -> ARTIFEX_FRAMES."""
    return "ARTIFEX_" + flag.lstrip("-").replace("-", "_").upper()


def env(flag: str, default: Any = None) -> Any:
    """The default for --flag: $ARTIFEX_FLAG when set, else `default`.

    Never raises: parsers are built for every subcommand before any runs, so a bad value here would break
    every command, --help included. check_environment() names a bad value once the command is known.
    """
    _FROM_ENV.add(flag)
    value = os.environ.get(env_name(flag))
    if value is None:
        return default
    try:
        return _convert(value, default)
    except ValueError:
        return default


def _convert(value: str, default: Any) -> Any:
    if isinstance(default, bool):
        if value.strip().lower() in TRUE_WORDS:
            return True
        if value.strip().lower() in FALSE_WORDS:
            return False
        raise ValueError(value)
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    return value


def _problem(action: argparse.Action, value: str) -> str | None:
    """Why `value` cannot be this flag's value, or None when it can."""
    if action.nargs == 0:  # store_true / store_false
        if value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
            return None
        return "wants one of 1/0, true/false, yes/no, on/off"
    converted: Any = value
    if callable(action.type):
        try:
            converted = action.type(value)
        except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
            kind = "a whole number" if action.type is int else "a number" if action.type is float else ""
            return f"wants {kind}" if kind else str(exc) or "is not a valid value"
    if action.choices is not None and converted not in action.choices:
        return "wants one of " + ", ".join(map(str, action.choices))
    return None


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """`parser` and every parser below it (a command's verbs)."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found += _parsers(sub)
    return found


def check_environment(parser: argparse.ArgumentParser, command: argparse.ArgumentParser | None,
                      argv: Sequence[str]) -> list[str]:
    """One message per ARTIFEX_<FLAG> whose value the flags of `command` (and the top level) cannot take.

    A flag given on the command line wins over its variable, so that variable is not checked.
    """
    given = {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}
    scopes = [parser] + (_parsers(command) if command is not None else [])
    messages: dict[str, str] = {}
    for scope in scopes:
        for action in scope._actions:
            for flag in action.option_strings:
                name = env_name(flag)
                value = os.environ.get(name)
                if flag not in _FROM_ENV or value is None or flag in given or name in messages:
                    continue
                why = _problem(action, value)
                if why:
                    messages[name] = f"{name}={value!r} (the value of {flag}) {why}: fix it or unset it"
    return list(messages.values())


def add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=env("--config"), metavar="TOML",
                        help="cluster file (default: built-in single-machine defaults) [ARTIFEX_CONFIG]")


def add_state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", type=Path, default=env("--state-dir"),
                        help="where pid files and logs go (default: $ARTIFEX_HOME or ~/.artifex) [ARTIFEX_STATE_DIR]")


def state_dir(args: argparse.Namespace) -> Path:
    """Where `up` keeps pid files and logs, and `down` and `top` find them."""
    return Path(args.state_dir or default_home()).expanduser()

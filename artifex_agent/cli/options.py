"""Flags shared by subcommands; each also reads ARTIFEX_<FLAG> from the environment."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from artifex_agent.config import default_home


def env(flag: str, default: Any = None) -> Any:
    """The default for --flag: $ARTIFEX_FLAG when set, else `default`."""
    value = os.environ.get("ARTIFEX_" + flag.lstrip("-").replace("-", "_").upper())
    if value is None:
        return default
    if isinstance(default, bool):
        return value.lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    return value


def add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=env("--config"), metavar="TOML",
                        help="cluster file (default: built-in single-machine defaults) [ARTIFEX_CONFIG]")


def add_state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", type=Path, default=env("--state-dir"),
                        help="where pid files and logs go (default: $ARTIFEX_HOME or ~/.artifex) [ARTIFEX_STATE_DIR]")


def state_dir(args: argparse.Namespace) -> Path:
    """Where `up` keeps pid files and logs, and `down` and `top` find them."""
    return Path(args.state_dir or default_home()).expanduser()

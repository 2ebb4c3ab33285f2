"""Flags shared by subcommands; each also reads ARTIFEX_<FLAG> from the environment."""

from __future__ import annotations

import argparse
import os
from typing import Any


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

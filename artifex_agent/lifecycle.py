"""Process start-up shared by the long-running commands; imports no torch (the coordinator needs none)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path


def install_event_loop() -> None:
    """uvloop where it exists (not on Windows); asyncio's loop otherwise."""
    if sys.platform == "win32":
        return
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def write_port_file(path: Path, port: int) -> None:
    """Publish the bound port atomically, so a reader never sees a half-written number."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(str(port))
    tmp.replace(path)

"""A file replaced whole: written under a fresh name created exclusively, then renamed onto its path.

O_EXCL|O_NOFOLLOW: the temporary is never an existing file or a link someone planted there, and
the rename replaces whatever is at the path (a link included) instead of writing through it. A
reader sees the old file or the new one, never half of one. Output folders the agents share use
engines/temp_files.py (hidden .tmp/ folder, locks for cleaners) instead.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


@contextlib.contextmanager
def replacing(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A new file (created with `mode`) that becomes `path` when the block ends; deleted if it raises."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.part")
    fd = os.open(tmp, NEW_FILE, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

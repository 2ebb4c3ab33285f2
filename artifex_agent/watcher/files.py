"""Moving inputs to where they end up, and the small notes written beside them."""

from __future__ import annotations

import logging
import os
import socket
import stat
import time
from pathlib import Path
from typing import BinaryIO

from artifex_agent.engines.paths import atomic_write_bytes
from artifex_agent.errors import ArtifexError
from artifex_agent.watcher import names
from artifex_agent.watcher.claim import Claim
from artifex_agent.watcher.names import Layout

logger = logging.getLogger(__name__)


class Refused(ArtifexError):
    """The input itself is wrong: it goes to failed/ with this message, and is never retried."""


class Retry(ArtifexError):
    """Something outside the input is not ready (coordinator or agent down): try again later."""


# Opening a FIFO for reading waits for a writer (forever, and signals do not end the wait); a
# device may never end. O_NONBLOCK makes such an open return at once, O_NOFOLLOW refuses a
# symbolic link swapped in after the check; regular files read the same with both.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"))


def write_note(path: Path, text: str) -> None:
    """Write a small text file so readers on either PC see all of it or none."""
    atomic_write_bytes(path, names.printable(text).encode("utf-8"))


def _not_regular(mode: int, label: str) -> Refused:
    kind = next((what for test, what in _KINDS if test(mode)), "not a regular file")
    return Refused(f"{label} is {kind}, not a regular file; only regular files are read from the drop folder")


def check_regular(path: Path, label: str = "") -> os.stat_result:
    """lstat `path` without opening it; Refused unless it is a regular file."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(st.st_mode, label or path.name)
    return st


def open_regular(path: Path, label: str = "") -> BinaryIO:
    """Open a regular file for reading; a FIFO, socket or device is refused without waiting on it."""
    check_regular(path, label)
    fd = os.open(path, _OPEN_FLAGS)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):  # swapped between the lstat and the open
            raise _not_regular(mode, label or path.name)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_limited(path: Path, limit: int, what: str, label: str = "") -> bytes:
    """All bytes of a regular file of at most `limit` bytes; Refused, naming the limit, otherwise."""
    label = label or path.name
    with open_regular(path, label) as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read(limit + 1) if size <= limit else b""
    if size > limit or len(data) > limit:  # too big, or grew since the fstat
        raise Refused(f"{label} is {max(size, len(data)):,} bytes; {what} may be at most {limit:,} bytes")
    return data


def move_unique(src: Path, folder: Path, name: str, tag: str) -> Path:
    """Rename `src` into `folder` as `name`, or a tagged variant when that name is taken."""
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / names.unique_name(folder, name, tag)
    os.rename(src, dest)
    return dest


def resolve_input(path: Path, origin: Path, root: Path) -> Path:
    """The file to read for a dropped entry; a symlink must land inside the share.

    A claimed link was moved from `origin` into processing/, so a relative target is
    resolved from where the user made it, not from where it sits now.
    """
    if not path.is_symlink():
        return path
    target = Path(os.readlink(path))
    if not target.is_absolute():
        target = origin / target
    real = target.resolve()
    if not real.is_relative_to(root.resolve()):
        raise Refused(f"it is a symbolic link to {os.readlink(path)!r}, which points outside the shared "
                      f"folder {root}; links must stay inside the share (copy the file in instead)")
    if not real.exists():
        raise Refused(f"it is a symbolic link to {os.readlink(path)!r}, which does not exist")
    return real


def error_text(relpath: str, reason: str, owner: str, *, hint: str = "") -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S %z")
    hint = hint or f"Fix it and drop it into {relpath.split('/')[0]}/ again. This copy can be deleted."
    return (f"artifex-agent watch did not run {relpath!r}.\n\n"
            f"Why: {reason}\n\n"
            f"What to do: {hint}\n\n"
            f"(watcher {owner} on {socket.gethostname()}, {when})\n")


def quarantine(c: Claim, layout: Layout, reason: str, owner: str, *, tag: str, hint: str = "") -> Path:
    """Move a claimed input to failed/ with NAME.error.txt beside it; returns its new path."""
    dest = move_unique(c.path, layout.failed, c.name, tag)
    write_note(dest.with_name(dest.name + names.ERROR_SUFFIX), error_text(c.relpath, reason, owner, hint=hint))
    # A claimed video's sidecar travels with it.
    side = sidecar_of(c)
    if side.exists():
        move_unique(side, layout.failed, side_name(c.name), tag)
    logger.warning("refused %s -> %s: %s", c.relpath, dest, reason)
    return dest


def side_name(video_name: str) -> str:
    """"clip.mp4" -> "clip.post.toml", the sidecar that goes with a video."""
    return Path(video_name).stem + names.VIDEO_SIDECAR


def sidecar_of(c: Claim) -> Path:
    """Where a claimed video's sidecar is kept in processing/."""
    return c.path.with_name(c.path.name + names.VIDEO_SIDECAR)

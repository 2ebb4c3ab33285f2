"""Moving inputs to where they end up, and the small notes written beside them."""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

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


def write_note(path: Path, text: str) -> None:
    """Write a small text file so readers on either PC see all of it or none."""
    atomic_write_bytes(path, text.encode("utf-8"))


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

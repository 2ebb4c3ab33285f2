"""Claiming inputs by an atomic rename into processing/, so two watchers never both take one.

A rename is atomic on local disks, NFS and SMB alike: of two watchers renaming the same
file, one succeeds and the other finds the source gone. The claimed name records who took
it, so a restarted watcher finds its own unfinished work, and a watcher whose heartbeat has
stopped can have its claims taken over.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from artifex_agent.watcher import names
from artifex_agent.watcher.names import Layout

logger = logging.getLogger(__name__)

ClaimKind = Literal["job", "frames"]
_SEP = "~"


def default_owner(configured: str = "") -> str:
    """The name this watcher's claims carry: the configured one or the host name, made file-safe."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", configured or socket.gethostname()).strip("-.") or "watcher"


@dataclass(frozen=True)
class Claim:
    """One input taken by a watcher, as named inside processing/."""

    path: Path
    owner: str
    kind: ClaimKind
    token: str
    name: str

    @property
    def relpath(self) -> str:
        """Where it was dropped, relative to the drop root, '/'-separated on every OS; printable (notes, logs)."""
        return names.printable(f"{names.INBOX if self.kind == 'job' else names.FRAMES}/{self.name}")

    @property
    def origin(self) -> Path:
        """The folder it was dropped into."""
        return self.path.parent.parent / (names.INBOX if self.kind == "job" else names.FRAMES)


def parse(path: Path) -> Claim | None:
    parts = path.name.split(_SEP, 3)
    if len(parts) != 4 or parts[1] not in ("job", "frames"):
        return None
    owner, kind, token, name = parts
    if kind == "frames" and name.endswith(names.VIDEO_SIDECAR):
        return None  # a claimed video's sidecar, not an input of its own
    return Claim(path, owner, kind, token, name)  # type: ignore[arg-type]


def claim(src: Path, layout: Layout, owner: str, kind: ClaimKind) -> Claim | None:
    """Rename `src` into processing/; None when another watcher (or the writer) got there first."""
    token = f"{time.time_ns():x}{secrets.token_hex(2)}"
    dest = layout.processing / _SEP.join((owner, kind, token, src.name))
    try:
        os.rename(src, dest)
    except FileNotFoundError:
        return None  # another watcher took it
    except PermissionError:
        # Windows refuses to rename a file that a writer still holds open: it is not complete yet.
        logger.debug("%s is still open elsewhere; trying again later", src)
        return None
    except OSError as exc:
        logger.warning("cannot claim %s: %s", src, exc)
        return None
    return Claim(dest, owner, kind, token, src.name)


def list_claims(layout: Layout) -> list[Claim]:
    out = []
    try:
        with os.scandir(layout.processing) as it:
            for d in it:
                c = parse(Path(d.path))
                if c is not None:
                    out.append(c)
    except FileNotFoundError:
        pass
    return sorted(out, key=lambda c: c.token)


def take_over(c: Claim, owner: str) -> Claim | None:
    """Rename another (dead) watcher's claim to ours; None when someone else was faster."""
    dest = c.path.with_name(_SEP.join((owner, c.kind, c.token, c.name)))
    try:
        os.rename(c.path, dest)
    except OSError:
        return None
    logger.warning("took over %s from watcher %r, whose heartbeat stopped", c.name, c.owner)
    return Claim(dest, owner, c.kind, c.token, c.name)


@dataclass
class Heartbeats:
    """This watcher's heartbeat file, and a clock-free view of the others'.

    Another watcher counts as dead when its heartbeat file's mtime has not changed for
    `timeout_s` of *our* monotonic time, so clocks that differ between PCs do not matter.
    """

    layout: Layout
    owner: str
    timeout_s: float
    nonce: str = field(default_factory=lambda: secrets.token_hex(8))
    _others: dict[str, tuple[int, float]] = field(default_factory=dict)
    _last_beat: float = 0.0
    _warned: bool = False

    @property
    def path(self) -> Path:
        return self.layout.state / f"{self.owner}.alive"

    def beat(self, min_interval_s: float = 1.0) -> None:
        now = time.monotonic()
        if now - self._last_beat < min_interval_s:
            return
        try:
            previous = self.path.read_text(encoding="utf-8").split()[:1]
        except OSError:
            previous = []
        if self._last_beat and previous and previous[0] != self.nonce and not self._warned:
            self._warned = True
            logger.error("another watcher is running as owner %r on %s; give each watcher its own "
                         "[watcher] owner or they will redo each other's claims", self.owner, self.layout.root)
        try:
            self.path.write_text(f"{self.nonce} {os.getpid()} {socket.gethostname()}\n", encoding="utf-8")
        except OSError as exc:
            logger.warning("cannot write heartbeat %s: %s", self.path, exc)
        self._last_beat = now

    def dead(self, owner: str) -> bool:
        """True once `owner`'s heartbeat has stood still for timeout_s while we watched."""
        if owner == self.owner:
            return False
        try:
            mtime = (self.layout.state / f"{owner}.alive").stat().st_mtime_ns
        except FileNotFoundError:
            mtime = -1
        now = time.monotonic()
        seen = self._others.get(owner)
        if seen is None or seen[0] != mtime:
            self._others[owner] = (mtime, now)
            return False
        return now - seen[1] >= self.timeout_s

"""One process per state file: an OS lock on `<file>.lock`, held for the life of the process.

The OS drops the lock when its process dies, kill -9 included, so a crash never leaves a
stale lock; the holder writes its pid, host and start time into the file so that the next
process can say who holds it.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from pathlib import Path

from artifex_agent.errors import ConfigError

# Windows locks are mandatory byte ranges: lock one byte far past the holder's note, so that
# a refused process can still read the note.
_LOCK_OFFSET = 1 << 20


class InstanceLock:
    """An exclusive lock beside `path`; `what` and `hint` word the refusal."""

    def __init__(self, path: Path, what: str, hint: str = "stop it first") -> None:
        self.target = Path(path)
        self.path = Path(f"{path}.lock")
        self.what = what
        self.hint = hint
        self._fd: int | None = None

    def acquire(self) -> InstanceLock:
        """Take the lock, or ConfigError naming the process that holds it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # No following a link planted where the lock file goes: the note would be written through it.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot create the lock file {self.path}: {exc.strerror}") from None
        if not _lock(fd):
            os.close(fd)
            raise ConfigError(f"another {self.what} already uses {self.target} ({self.holder()}); {self.hint}")
        started = datetime.datetime.now().astimezone().isoformat(sep=" ", timespec="seconds")
        note = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started})
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{note}\n".encode())
        self._fd = fd
        return self

    def holder(self) -> str:
        """Who the lock file says holds it, in words."""
        try:
            note = json.loads(self.path.read_text(encoding="utf-8").strip() or "{}")
            return f"pid {note['pid']} on {note['host']}, started {note['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            return f"holder unknown: see {self.path}"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock on every OS
            self._fd = None


def _lock(fd: int) -> bool:
    """A non-blocking exclusive lock on the open file; False when another process holds it."""
    try:
        if os.name == "nt":
            import msvcrt

            os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True

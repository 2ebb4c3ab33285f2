"""Files written out of sight in a hidden .tmp/ folder, never through a link, renamed into place when complete.

A write to `folder/NAME` goes to `folder/.tmp/NAME.<host>-<random>.part`, created with
O_CREAT|O_EXCL|O_NOFOLLOW inside folders opened without following links, and held under an
exclusive flock while it is written. A cleaner tells a dead temporary from a live one by taking
that lock itself: if it can, the writer is gone. Locks taken on another PC are not always
visible here (CIFS keeps flock local), so another host's temporaries go only by age.

Windows: O_NOFOLLOW, dir_fd and flock do not exist there. O_EXCL still refuses any existing name,
links included; creating a symlink needs a privilege (or Developer Mode); an open file cannot be
deleted, so a failed delete marks a live temporary; `.tmp` is given the hidden attribute.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import re
import secrets
import socket
import stat
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

if sys.platform != "win32":
    import fcntl

logger = logging.getLogger(__name__)

TEMP_DIR = ".tmp"
TEMP_SUFFIX = ".part"
NAME_MAX = 255  # bytes per name on Linux; Windows allows 255 UTF-16 units, never more than the UTF-8 bytes
# Which PC wrote a temporary: its lock can be trusted only on the same host.
_HOST = hashlib.sha256(socket.gethostname().encode("utf-8", "surrogatepass")).hexdigest()[:6]
_TAIL = re.compile(r"\.([0-9a-f]{6})-[0-9a-f]{12}" + re.escape(TEMP_SUFFIX) + r"\Z")
TEMP_NAME_EXTRA = len(".000000-000000000000" + TEMP_SUFFIX)
# A writer creates its file and locks it a moment later; a lock test on anything younger could
# take that moment for death.
_LOCK_GRACE_S = 2.0
# The age after which a temporary whose lock cannot be trusted counts as dead (an encode
# stalled longer than this on another PC, over CIFS, would lose its temporary).
_DEFAULT_MIN_AGE_S = 300.0
_IO_REPARSE_TAG_MOUNT_POINT = 0xA0000003
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_BINARY = getattr(os, "O_BINARY", 0)
_DIR_FDS = sys.platform != "win32" and {os.open, os.rename, os.unlink, os.mkdir, os.stat} <= os.supports_dir_fd


def _fit(name: str, room: int) -> str:
    """`name`, cut to `room` UTF-8 bytes at a character boundary when longer."""
    raw = name.encode("utf-8", "surrogateescape")
    return name if len(raw) <= room else raw[:room].decode("utf-8", "ignore")


def temp_name(final_name: str) -> str:
    """A fresh temporary name for `final_name`; a long name is cut so the result fits in NAME_MAX bytes."""
    prefix = _fit(final_name, NAME_MAX - TEMP_NAME_EXTRA)
    return f"{prefix}.{_HOST}-{secrets.token_hex(6)}{TEMP_SUFFIX}"


def is_link(st: os.stat_result) -> bool:
    """True for a symlink, and for a Windows directory junction (which leads elsewhere but is not S_ISLNK)."""
    return stat.S_ISLNK(st.st_mode) or getattr(st, "st_reparse_tag", 0) == _IO_REPARSE_TAG_MOUNT_POINT


def _link_refused(path: Path) -> OSError:
    return OSError(errno.ELOOP, f"{path} is a symbolic link; files are never written through links")


class _Dir:
    """A folder opened once without following a link; later operations address names inside that handle."""

    def __init__(self, path: Path, *, parent: _Dir | None = None) -> None:
        self.path = path
        self.fd: int | None = None
        where = parent.ref(path.name) if parent else str(path)
        dir_fd = parent.fd if parent else None
        if _DIR_FDS:
            try:
                self.fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW, dir_fd=dir_fd)
            except OSError as exc:
                # Linux says ENOTDIR for a link opened with O_DIRECTORY|O_NOFOLLOW, others ELOOP.
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and is_link(os.stat(where, dir_fd=dir_fd,
                                                                                  follow_symlinks=False)):
                    raise _link_refused(path) from None
                raise
        elif is_link(os.lstat(where)):
            raise _link_refused(path)

    def ref(self, name: str) -> str:
        """How to name `name` in an os call that gets dir_fd=self.fd."""
        return name if self.fd is not None else str(self.path / name)

    def fsync(self) -> None:
        # Makes a rename durable; some network filesystems refuse fsync on folders.
        if self.fd is not None:
            try:
                os.fsync(self.fd)
            except OSError:
                pass

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _open_temp_dir(folder: _Dir) -> _Dir:
    """`folder`/.tmp, created if missing; a link or a file in its place is refused."""
    try:
        os.mkdir(folder.ref(TEMP_DIR), dir_fd=folder.fd)
        if sys.platform == "win32":
            import ctypes

            ctypes.windll.kernel32.SetFileAttributesW(folder.ref(TEMP_DIR), 0x2)  # FILE_ATTRIBUTE_HIDDEN
    except FileExistsError:
        pass
    return _Dir(folder.path / TEMP_DIR, parent=folder)


class _File(io.FileIO):
    """The temporary's handle: a write always writes everything (PyAV takes a short write as complete)."""

    def write(self, b: ReadableBuffer, /) -> int:
        view = memoryview(b).cast("B")
        done = 0
        while done < len(view):
            n = super().write(view[done:])
            if not n:
                raise OSError(errno.EIO, f"short write to {self.name}")
            done += n
        return done


class _Reader(io.RawIOBase):
    """A second read position on the temporary: the mp4 muxer reopens its output for the faststart pass."""

    def __init__(self, file: _File) -> None:
        self._file, self._pos = file, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        # The writer expects the shared position where it left it.
        here = self._file.tell()
        try:
            self._file.seek(self._pos)
            n = self._file.readinto(b) or 0
        finally:
            self._file.seek(here)
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_CUR:
            offset += self._pos
        elif whence == os.SEEK_END:
            offset += os.fstat(self._file.fileno()).st_size
        self._pos = offset
        return self._pos

    def tell(self) -> int:
        return self._pos


class TempFile:
    """A file being written for `final`; `publish()` renames it onto `final`, `discard()` deletes it."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.name = temp_name(final.name)
        self.path = final.parent / TEMP_DIR / self.name
        self._released = False
        self._folder = _Dir(final.parent)
        try:
            self._tmp = _open_temp_dir(self._folder)
            try:
                flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _BINARY
                fd = os.open(self._tmp.ref(self.name), flags, 0o666, dir_fd=self._tmp.fd)
            except BaseException:
                self._tmp.close()
                raise
        except BaseException:
            self._folder.close()
            raise
        self.file = _File(fd, "r+")
        if sys.platform != "win32":
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:  # a filesystem without locks: cleaners fall back to age
                logger.debug("no lock on %s: %s", self.path, exc)
        # A retried stage writes the same final name: what its dead predecessors left goes now.
        try:
            _clean(self._tmp, _fit(final.name, NAME_MAX - TEMP_NAME_EXTRA), self.name, _DEFAULT_MIN_AGE_S)
        except OSError as exc:
            logger.warning("cannot clean old temporaries for %s: %s", final, exc)

    def reopen(self, url: str, flags: int, options: dict[str, Any]) -> _Reader:
        """PyAV's `io_open`: the muxer may read its own output back, and nothing else."""
        if flags & 2:  # AVIO_FLAG_WRITE
            raise PermissionError(errno.EACCES, f"the muxer may not open {url!r} for writing")
        return _Reader(self.file)

    def publish(self) -> None:
        """Make the file durable and rename it onto `final` (a link there is replaced, never followed)."""
        os.fsync(self.file.fileno())
        if sys.platform == "win32":
            self.file.close()  # Windows cannot rename a file that is open
        os.replace(self._tmp.ref(self.name), self._folder.ref(self.final.name),
                   src_dir_fd=self._tmp.fd, dst_dir_fd=self._folder.fd)
        self._folder.fsync()
        self._release()

    def discard(self) -> None:
        """Delete the unfinished file; safe to call more than once, and after a failed publish()."""
        if self._released:
            return
        self.file.close()
        try:
            os.unlink(self._tmp.ref(self.name), dir_fd=self._tmp.fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("cannot remove %s: %s", self.path, exc.strerror)
        self._release()

    def _release(self) -> None:
        # Closing the file drops the lock: from here a cleaner may take what is left for dead.
        self.file.close()
        self._tmp.close()
        self._folder.close()
        self._released = True

    def __enter__(self) -> TempFile:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.discard()


def _is_live(folder: _Dir, name: str) -> bool | None:
    """True if a writer holds `name`'s lock, False if nobody does, None if this cannot be told."""
    if sys.platform == "win32":
        return None
    try:
        fd = os.open(folder.ref(name), os.O_RDONLY | os.O_NONBLOCK | _NOFOLLOW, dir_fd=folder.fd)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)
    return False


def _is_dead(folder: _Dir, name: str, host: str, age: float, min_age_s: float) -> bool:
    live = _is_live(folder, name)
    if live:
        return False
    if live is False and host == _HOST:
        return age >= _LOCK_GRACE_S
    # Another PC's lock may be invisible here, or locks do not work: only age tells.
    return age >= min_age_s


def clean_temp_dir(path: Path, *, min_age_s: float = _DEFAULT_MIN_AGE_S) -> int:
    """Delete the dead temporaries in the .tmp folder `path`; return how many went."""
    d = _Dir(path)
    try:
        return _clean(d, None, "", min_age_s)
    finally:
        d.close()


def _clean(d: _Dir, prefix: str | None, keep: str, min_age_s: float) -> int:
    """Delete dead temporaries in `d` (only those whose final name starts the same as `prefix`, if given)."""
    removed = 0
    now = time.time()
    with os.scandir(d.fd if d.fd is not None else d.path) as it:
        entries = list(it)
    for entry in entries:
        m = _TAIL.search(entry.name)
        if not m or entry.name == keep or (prefix is not None and entry.name[: m.start()] != prefix):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or not _is_dead(d, entry.name, m.group(1), now - st.st_mtime, min_age_s):
                continue
            os.unlink(d.ref(entry.name), dir_fd=d.fd)
        except FileNotFoundError:
            continue
        except PermissionError:
            continue  # Windows: still open, so its writer is alive
        removed += 1
        logger.info("removed dead temporary %s", d.path / entry.name)
    return removed

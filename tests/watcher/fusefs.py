"""A passthrough FUSE filesystem: the mount shows a backing folder, like a network share shows the server's disk.

Writes made through the mount pass through this kernel (inotify sees them); writes made to
the backing folder directly stand in for the other PC's writes, which inotify never sees.

    python -m tests.watcher.fusefs BACKING MOUNTPOINT
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any

from mfusepy import FUSE, FuseOSError, Operations

_STAT = ("st_mode", "st_nlink", "st_size", "st_uid", "st_gid", "st_ino")
_STATVFS = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files", "f_flag", "f_frsize",
            "f_namemax")


def _os(fn: Any) -> Any:
    def wrapped(*args: Any) -> Any:
        try:
            return fn(*args)
        except OSError as exc:
            raise FuseOSError(exc.errno or errno.EIO) from None
    wrapped.__name__ = fn.__name__
    return wrapped


class Passthrough(Operations):  # type: ignore[misc]
    use_ns = True

    def __init__(self, root: str) -> None:
        self.root = root

    def _p(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    @_os
    def getattr(self, path: str, fh: Any = None) -> dict[str, int]:
        st = os.lstat(self._p(path))
        return {**{k: getattr(st, k) for k in _STAT}, "st_atime": st.st_atime_ns, "st_mtime": st.st_mtime_ns,
                "st_ctime": st.st_ctime_ns}

    @_os
    def readdir(self, path: str, fh: Any) -> list[str]:
        return [".", "..", *os.listdir(self._p(path))]

    @_os
    def open(self, path: str, flags: int) -> int:
        return os.open(self._p(path), flags)

    @_os
    def create(self, path: str, mode: int, fi: Any = None) -> int:
        return os.open(self._p(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)

    @_os
    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return os.pread(fh, size, offset)

    @_os
    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        return os.pwrite(fh, data, offset)

    @_os
    def release(self, path: str, fh: int) -> int:
        os.close(fh)
        return 0

    @_os
    def fsync(self, path: str, datasync: int, fh: int) -> int:
        os.fsync(fh)
        return 0

    @_os
    def rename(self, old: str, new: str) -> None:
        os.rename(self._p(old), self._p(new))

    @_os
    def mkdir(self, path: str, mode: int) -> None:
        os.mkdir(self._p(path), mode)

    @_os
    def unlink(self, path: str) -> None:
        os.unlink(self._p(path))

    @_os
    def rmdir(self, path: str) -> None:
        os.rmdir(self._p(path))

    @_os
    def truncate(self, path: str, length: int, fh: Any = None) -> None:
        os.truncate(self._p(path), length)

    @_os
    def utimens(self, path: str, times: Any = None) -> None:
        os.utime(self._p(path), ns=times)

    @_os
    def chmod(self, path: str, mode: int) -> None:
        os.chmod(self._p(path), mode)

    @_os
    def readlink(self, path: str) -> str:
        return os.readlink(self._p(path))

    @_os
    def symlink(self, target: str, source: str) -> None:
        os.symlink(source, self._p(target))

    @_os
    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self._p(path))
        return {k: getattr(st, k) for k in _STATVFS}


def main() -> None:
    backing, mountpoint = sys.argv[1], sys.argv[2]
    # No kernel attribute caching: a change behind the mount shows on the next stat, as with NFS noac.
    FUSE(Passthrough(backing), mountpoint, foreground=True, attr_timeout=0, entry_timeout=0, negative_timeout=0,
         fsname="artifex-passthrough")


if __name__ == "__main__":
    main()

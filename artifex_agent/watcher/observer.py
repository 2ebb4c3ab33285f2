"""Inotify (or the OS's native events) on local disks, polling on network filesystems.

A network filesystem reports to inotify only what this machine wrote through it: the other
PC's writes reach the server and never raise a local event. So the filesystem under the
drop folder decides: polling there, native events on local disks (`--polling` forces it).
"""

from __future__ import annotations

import logging
import ntpath
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from watchdog.events import (
    DirMovedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserverVFS

from artifex_agent.watcher.names import is_ignored

logger = logging.getLogger(__name__)

Mode = Literal["polling", "native"]

# Filesystems whose changes can come from another machine (or from behind a FUSE daemon).
NETWORK_FILESYSTEMS = {
    "nfs", "nfs4", "cifs", "smb3", "smb2", "smbfs", "9p", "drvfs", "afs", "ceph", "glusterfs", "lustre",
    "gpfs", "beegfs", "davfs", "webdav", "afpfs", "ncpfs", "virtiofs", "vboxsf", "vmhgfs", "fuse",
}
# fuseblk is ntfs-3g/exFAT on a local disk: every write passes through this kernel.
LOCAL_FUSE = {"fuseblk"}
DRIVE_REMOTE = 4  # GetDriveTypeW
MOVE_PAIRING_S = 0.05


@dataclass(frozen=True)
class WatchMode:
    """How the folder is watched, and why (logged at start-up and shown by --status)."""

    mode: Mode
    fstype: str
    reason: str


def is_network_fstype(fstype: str) -> bool:
    fstype = fstype.lower()
    if fstype in LOCAL_FUSE:
        return False
    return fstype in NETWORK_FILESYSTEMS or fstype.startswith("fuse.")


def _unescape_mount(field: str) -> str:
    # /proc/self/mountinfo writes space, tab, newline and backslash as octal escapes.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def linux_mounts(mountinfo: str) -> list[tuple[str, str]]:
    """(mount point, fstype) pairs from the text of /proc/self/mountinfo."""
    out = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right.split():
            continue
        out.append((_unescape_mount(fields[4]), right.split()[0]))
    return out


def _existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path.parent != path:
        path = path.parent
    return path.resolve()


def mount_fstype(path: Path, mounts: list[tuple[str, str]]) -> str:
    """The fstype of the longest mount point holding `path` (the last mount wins on ties: it hides the others)."""
    target = str(_existing(path))
    best, fstype = -1, "unknown"
    for point, kind in mounts:
        inside = target == point or target.startswith(point.rstrip("/") + "/") or point == "/"
        if inside and len(point) >= best:
            best, fstype = len(point), kind
    return fstype


def windows_drive_kind(path: str, get_drive_type: Callable[[str], int] | None) -> tuple[bool, str]:
    """(network?, description) for a Windows path: UNC paths and mapped drives are network."""
    full = ntpath.abspath(path) if os.name == "nt" else path
    if full.startswith(("\\\\?\\UNC\\", "\\\\?\\unc\\")):
        return True, "UNC path"
    if full.startswith("\\\\?\\"):
        full = full[4:]
    drive, _ = ntpath.splitdrive(full)
    if drive.startswith(("\\\\", "//")):
        return True, "UNC path"
    if get_drive_type is None or not drive:
        return False, "local path"
    kind = get_drive_type(drive + "\\")
    return (kind == DRIVE_REMOTE), ("mapped network drive" if kind == DRIVE_REMOTE else f"drive type {kind}")


def _get_drive_type() -> Callable[[str], int] | None:
    try:
        import ctypes

        fn = ctypes.windll.kernel32.GetDriveTypeW  # type: ignore[attr-defined]
        fn.argtypes = [ctypes.c_wchar_p]
        fn.restype = ctypes.c_uint
        return fn  # type: ignore[no-any-return]
    except (ImportError, AttributeError, OSError):
        return None


def filesystem_kind(path: Path) -> tuple[bool, str]:
    """(network?, filesystem description) for the folder at `path`."""
    if os.name == "nt":
        return windows_drive_kind(str(path), _get_drive_type())
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
                fstype = mount_fstype(path, linux_mounts(f.read()))
            return is_network_fstype(fstype), fstype
        except OSError:
            pass
    try:  # macOS, BSDs: psutil reads the mount table
        import psutil

        parts = [(p.mountpoint, p.fstype) for p in psutil.disk_partitions(all=True)]
        fstype = mount_fstype(path, parts)
        return is_network_fstype(fstype), fstype
    except Exception:  # noqa: BLE001 - unknown platform: be safe and poll
        return True, "unknown"


def choose_mode(root: Path, configured: str = "auto", force_polling: bool = False) -> WatchMode:
    """Polling when forced, configured, or the folder is on a network filesystem; native otherwise."""
    network, fstype = filesystem_kind(root)
    if force_polling:
        return WatchMode("polling", fstype, "--polling given")
    if configured == "polling":
        return WatchMode("polling", fstype, "watcher.mode = polling")
    if configured == "native":
        return WatchMode("native", fstype, "watcher.mode = native")
    if network:
        return WatchMode("polling", fstype, f"{fstype} is a network filesystem: other machines' writes raise no events")
    return WatchMode("native", fstype, f"{fstype} is a local filesystem")


def _input_entries(path: str | None) -> Iterator[os.DirEntry[str]]:
    """os.scandir without temporary names: 10,000 in-flight *.part files cost one directory read, no stats."""
    with os.scandir(path) as it:
        yield from (d for d in it if not is_ignored(d.name))


def make_observer(mode: Mode, poll_interval_s: float) -> BaseObserver:
    """A started-later watchdog observer for `mode`."""
    if mode == "polling":
        return PollingObserverVFS(os.stat, _input_entries, polling_interval=poll_interval_s)
    if sys.platform.startswith("linux"):
        from watchdog.observers.inotify import InotifyObserver

        _shorten_move_pairing()

        # Full events: a file renamed in from outside the watched folder arrives as a move with no
        # source, not as a creation, so we know it arrived whole.
        return InotifyObserver(generate_full_events=True)
    from watchdog.observers import Observer

    return Observer()  # type: ignore[no-any-return]


class _StopNoise(logging.Filter):
    # watchdog 7 logs this at ERROR when an observer is stopped while its reader waits; nothing is lost.
    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


logging.getLogger("watchdog.observers.inotify").addFilter(_StopNoise())


def _shorten_move_pairing() -> None:
    # watchdog holds every IN_MOVED_FROM for 0.5 s to pair it with its IN_MOVED_TO, and events
    # queued behind it wait too: each claim (a rename out of inbox/) would delay the next file's
    # event by half a second. The kernel queues both halves of a rename together, so 50 ms pairs them.
    try:
        from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper
    except ImportError:  # another watchdog layout: keep its default
        return
    InotifyMoveEventGrouper.delay = MOVE_PAIRING_S


class DropHandler(FileSystemEventHandler):
    """Turns events into hints for the scan loop; never acts on a file itself.

    Only a rename into the folder counts as "arrived whole". A close is no such sign: the NFS
    server closes and reopens files between a client's writes, so close events come mid-file.
    """

    def __init__(self, watched: set[Path], wake: Callable[[], None], complete: Callable[[Path], None]) -> None:
        self.watched = {os.path.normcase(str(p)) for p in watched}
        self.wake = wake
        self.complete = complete

    def _top_level(self, path: str | bytes) -> Path | None:
        p = os.fsdecode(path)
        if p and os.path.normcase(os.path.dirname(p)) in self.watched:
            return Path(p)
        return None

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, (FileMovedEvent, DirMovedEvent)):
            dest = self._top_level(event.dest_path)
            if dest is not None:
                self.complete(dest)  # renamed in: arrived whole
        if event.event_type not in ("opened", "closed_no_write"):
            self.wake()

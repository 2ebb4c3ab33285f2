"""Which dropped entries are complete: temporary names wait, changing files wait, markers and renames count."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from artifex_agent.watcher import names

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    """One top-level entry of inbox/ or frames/, as one look saw it."""

    name: str
    path: Path
    is_dir: bool
    is_symlink: bool
    size: int
    mtime_ns: int
    ctime_ns: int

    @property
    def signature(self) -> tuple[int, int]:
        return self.size, self.mtime_ns


def list_entries(folder: Path, *, skip: tuple[str, ...] = ()) -> list[Entry]:
    """Top-level entries of `folder` that could be inputs: ignored names are skipped without a stat."""
    out: list[Entry] = []
    try:
        it = os.scandir(folder)
    except FileNotFoundError:
        return out
    with it:
        for d in it:
            # Name checks first: thousands of *.part files then cost a directory read, not a stat each.
            if d.name in skip or names.is_ignored(d.name):
                continue
            try:
                link = d.is_symlink()
                st = d.stat(follow_symlinks=False)
                is_dir = d.is_dir(follow_symlinks=True)
            except FileNotFoundError:
                continue  # taken by another watcher between the listing and the stat
            out.append(Entry(d.name, Path(d.path), is_dir, link, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return out


def folder_signature(path: Path) -> tuple[int, int, int]:
    """(entries, bytes, newest mtime) of a folder's direct children: equal on two looks means nobody is writing."""
    count = total = newest = 0
    with os.scandir(path) as it:
        for d in it:
            try:
                st = d.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            count += 1
            total += st.st_size
            newest = max(newest, st.st_mtime_ns)
    return count, total, newest


def looks_renamed_in(entry: Entry) -> bool:
    """POSIX: a folder whose inode changed after its last entry did was renamed (or `cp -a`/rsync finished).

    Adding an entry sets a folder's mtime and ctime together; a rename (or a copier setting the
    folder's times at the end) moves only ctime. Windows' st_ctime is the creation time, so
    there this says nothing and folders need a _READY marker or a rename seen by the observer.
    """
    return os.name != "nt" and entry.is_dir and entry.ctime_ns > entry.mtime_ns


@dataclass
class _Seen:
    signature: tuple[int, ...]
    since: float
    hinted: bool = False


@dataclass
class Stability:
    """Remembers what each look saw; an entry is complete when nothing changed for `settle_s`.

    Observer threads add hints (a rename into the folder, a writer closing the file) that make
    an entry complete at once; the scan loop does everything else.
    """

    settle_s: float
    _seen: dict[Path, _Seen] = field(default_factory=dict)
    _hints: set[Path] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def hint_complete(self, path: Path) -> None:
        with self._lock:
            self._hints.add(path)

    def ready(self, path: Path, signature: tuple[int, ...], now: float | None = None) -> bool:
        """Record this look; True when `path` counts as complete."""
        now = time.monotonic() if now is None else now
        with self._lock:
            hinted = path in self._hints
            self._hints.discard(path)
        seen = self._seen.get(path)
        if seen is None or seen.signature != signature:
            # First look, or it changed: start the clock again. A hint (closed, renamed in) is the
            # writer telling us it is done with exactly this state.
            self._seen[path] = _Seen(signature, now, hinted)
            return hinted
        seen.hinted = seen.hinted or hinted
        return seen.hinted or now - seen.since >= self.settle_s

    def take_hint(self, path: Path) -> bool:
        """True (once) when an event said `path` arrived whole; for folders that wait for a marker."""
        with self._lock:
            if path in self._hints:
                self._hints.discard(path)
                return True
        return False

    def waiting(self) -> int:
        return len(self._seen)

    def next_due(self, now: float) -> float | None:
        """Seconds until the earliest tracked entry could become complete."""
        if not self._seen:
            return None
        return max(0.0, min(s.since + self.settle_s for s in self._seen.values()) - now)

    def forget(self, path: Path) -> None:
        self._seen.pop(path, None)

    def keep_only(self, present: set[Path]) -> None:
        """Drop memories of entries that are gone (taken by another watcher, deleted)."""
        for path in [p for p in self._seen if p not in present]:
            del self._seen[path]
        with self._lock:
            # A hint for something that appeared after the listing stays for the next pass.
            self._hints = {p for p in self._hints if p in present or p.exists()}

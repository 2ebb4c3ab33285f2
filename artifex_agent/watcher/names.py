"""The drop folder's layout and naming rules: what counts as an input, what is ignored."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

INBOX = "inbox"
ACCEPTED = "accepted"  # inside inbox/
FRAMES = "frames"
PROCESSING = "processing"
DONE = "done"
FAILED = "failed"
STATE = ".watcher"  # heartbeats of the watchers sharing the folder

JOB_SUFFIXES = (".toml", ".json")
# An i2v job's image dropped beside its job file in inbox/: read with the job, never an input of its own.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
READY_MARKER = "_READY"
FOLDER_SIDECAR = "_post.toml"
VIDEO_SIDECAR = ".post.toml"  # "clip.mp4" reads "clip.post.toml" beside it
ERROR_SUFFIX = ".error.txt"
RESULT_SUFFIX = ".result.txt"
JOB_ID_SUFFIX = ".job"

# Names writers use while a file is incomplete; they count only once renamed.
_TEMP_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".download", ".swp", ".swx", "~")
_TEMP_PREFIXES = (".", "~$", "~")
# Litter that file managers leave in any folder.
_JUNK = {"thumbs.db", "desktop.ini", "__macosx"}


@dataclass(frozen=True)
class Layout:
    """The folders under the drop root."""

    root: Path

    @property
    def inbox(self) -> Path:
        return self.root / INBOX

    @property
    def accepted(self) -> Path:
        return self.root / INBOX / ACCEPTED

    @property
    def frames(self) -> Path:
        return self.root / FRAMES

    @property
    def processing(self) -> Path:
        return self.root / PROCESSING

    @property
    def done(self) -> Path:
        return self.root / DONE

    @property
    def failed(self) -> Path:
        return self.root / FAILED

    @property
    def state(self) -> Path:
        return self.root / STATE

    def create(self) -> None:
        for folder in (self.inbox, self.accepted, self.frames, self.processing, self.done, self.failed, self.state):
            folder.mkdir(parents=True, exist_ok=True)


def is_temporary(name: str) -> bool:
    """True for names that mean "still being written" (or hidden): never taken as they are."""
    lower = name.lower()
    return lower.startswith(_TEMP_PREFIXES) or lower.endswith(_TEMP_SUFFIXES)


def is_ignored(name: str) -> bool:
    """Temporary names, file-manager litter and our own markers."""
    return is_temporary(name) or name.lower() in _JUNK


def is_job_image(name: str) -> bool:
    """An image in inbox/: it travels with the job file that names it (`image = "fox.png"`)."""
    return name.lower().endswith(IMAGE_SUFFIXES)


def is_video_sidecar(name: str) -> bool:
    return name.lower().endswith(VIDEO_SIDECAR)


def printable(text: str) -> str:
    """`text` with bytes that are not UTF-8 shown as \\xNN: safe for SQLite, notes, logs and terminals.

    os.listdir hands such bytes over as lone surrogates (PEP 383), which no UTF-8 writer accepts.
    """
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that did not come from a file name
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def name_problem(name: str) -> str | None:
    """Why a dropped name is refused, or None."""
    if printable(name) != name:
        # Windows and macOS cannot show such a name, and it could not be written to a note as it is.
        return f"the name '{printable(name)}' is not valid UTF-8; rename it (e.g. save it again from a current program)"
    if ".." in name:
        return f"the name {name!r} contains '..'; names with '..' are refused so nothing can point outside the share"
    if any(ord(c) < 32 for c in name):
        return f"the name {name!r} contains control characters"
    return None


def natural_key(name: str) -> tuple[object, ...]:
    """Sort key that puts frame_2 before frame_10."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name))


def unique_name(folder: Path, name: str, tag: str) -> str:
    """`name`, or `stem.TAG.ext` (then with a counter) when `folder` already holds that name."""
    if not (folder / name).exists() and not (folder / name).is_symlink():
        return name
    stem, dot, ext = name.partition(".") if not name.startswith(".") else (name, "", "")
    for i in range(1000):
        suffix = tag if i == 0 else f"{tag}-{i}"
        candidate = f"{stem}.{suffix}{dot}{ext}" if dot else f"{stem}.{suffix}"
        if not (folder / candidate).exists() and not (folder / candidate).is_symlink():
            return candidate
    raise FileExistsError(f"no free name for {name} in {folder}")

"""Output names confined to the output root, and files that appear only when complete."""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

from artifex_agent.errors import RequestError

logger = logging.getLogger(__name__)

PART_SUFFIX = ".part"
# Characters Windows refuses in names (":" also opens NTFS alternate data streams).
_WINDOWS_FORBIDDEN = set('<>:"|?*')
# Names that are devices on Windows whatever their extension ("nul.mp4" is the null device).
_WINDOWS_DEVICES = re.compile(r"^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³]|conin\$|conout\$)(\..*)?$", re.IGNORECASE)
_DRIVE = re.compile(r"^[A-Za-z]:")
_MAX_COMPONENT = 255


def _split_name(name: str) -> list[str]:
    """Check `name` without touching the disk and return its components."""
    if not isinstance(name, str) or not name.strip():
        raise RequestError("output name is empty")
    if "\x00" in name:
        raise RequestError("output name contains a NUL character")
    if name.startswith(("/", "\\")):
        raise RequestError(f"output name {name!r} is absolute; give a name relative to the output folder")
    if _DRIVE.match(name):
        raise RequestError(f"output name {name!r} names a drive; give a name relative to the output folder")
    # Both PCs read the same names, so "\" is a separator everywhere, not just on Windows.
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or name.replace("\\", "/").endswith("/"):
        raise RequestError(f"output name {name!r} names a folder, not a file")
    for part in parts:
        if part == "..":
            raise RequestError(f"output name {name!r} contains '..'; names must stay inside the output folder")
        if any(c in _WINDOWS_FORBIDDEN or ord(c) < 32 for c in part):
            raise RequestError(
                f'output name {name!r} contains a character not allowed in file names (<>:"|?* or control)'
            )
        if part != part.rstrip(" ."):
            # Windows silently strips these, so two different names would meet on one file.
            raise RequestError(f"output name {name!r} has a component ending in a dot or a space")
        if _WINDOWS_DEVICES.match(part):
            raise RequestError(f"output name {name!r} uses a reserved Windows device name ({part})")
        if len(part) > _MAX_COMPONENT:
            raise RequestError(f"output name {name!r} has a component longer than {_MAX_COMPONENT} characters")
    return parts


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def safe_output_path(root: Path, name: str, *, suffix: str = ".mp4") -> Path:
    """The path for output `name` under `root`, creating its folders; anything escaping `root` is refused."""
    parts = _split_name(name)
    if suffix and not parts[-1].lower().endswith(suffix.lower()):
        parts[-1] += suffix
        if len(parts[-1]) > _MAX_COMPONENT:
            raise RequestError(f"output name {name!r} is too long")
    root.mkdir(parents=True, exist_ok=True)
    real_root = root.resolve()
    # Walk down one folder at a time so a symlinked folder pointing outside is caught
    # before anything is created through it.
    current = real_root
    for part in parts[:-1]:
        current = current / part
        if current.exists() or current.is_symlink():
            if not _inside(current.resolve(), real_root):
                raise RequestError(f"output name {name!r} leads outside the output folder")
            if not current.is_dir():
                raise RequestError(f"output name {name!r}: {part!r} exists and is not a folder")
        else:
            current.mkdir()
    final = current / parts[-1]
    if not _inside(final.resolve(), real_root):
        raise RequestError(f"output name {name!r} leads outside the output folder")
    if final.is_dir():
        raise RequestError(f"output name {name!r} is an existing folder")
    return final


def confined_path(root: Path, name: str) -> Path:
    """The path of existing-or-not file `name` under `root` (inputs, models); nothing is created."""
    parts = _split_name(name)
    real_root = root.resolve()
    path = real_root.joinpath(*parts)
    # Symlinks are followed, and must land inside the root too: the drop folder is writable by clients.
    if not _inside(path.resolve(), real_root):
        raise RequestError(f"name {name!r} leads outside its folder")
    return path


def part_path(final: Path) -> Path:
    """Where `final` is written until it is complete ("name.mp4" -> "name.mp4.part")."""
    return final.with_name(final.name + PART_SUFFIX)


def sweep_parts(root: Path, *, min_age_s: float = 300.0) -> int:
    """Delete *.part files under `root` untouched for `min_age_s` seconds; return how many went."""
    # The age guard matters when both PCs write to one shared output folder: a fresh .part
    # may be the other agent's encode in progress, not a leftover of our own crash.
    removed: list[Path] = []
    if not root.is_dir():
        return 0
    cutoff = time.time() - min_age_s
    for folder, _dirs, files in os.walk(root, followlinks=False):
        for fname in files:
            if not fname.endswith(PART_SUFFIX):
                continue
            path = Path(folder) / fname
            try:
                if path.lstat().st_mtime > cutoff:
                    continue
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                logger.warning("cannot remove stale %s: %s", path, exc.strerror)
                continue
            removed.append(path)
    if removed:
        logger.info("removed %d stale .part file(s) under %s: %s", len(removed), root, ", ".join(map(str, removed)))
    return len(removed)


def fsync_file(path: Path) -> None:
    """Flush a closed file's data to disk."""
    # Windows can fsync only a handle opened for writing.
    with open(path, "r+b") as f:
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable; a no-op where folders cannot be opened (Windows)."""
    if os.name == "nt":
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some network filesystems refuse fsync on folders
    finally:
        os.close(fd)


def publish(part: Path, final: Path) -> None:
    """Move a finished `part` onto `final` atomically and durably."""
    os.replace(part, final)
    fsync_dir(final.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the whole new one, never a torn one."""
    part = part_path(path)
    try:
        with open(part, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        publish(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise

"""Output names confined to the output root, and files that appear only when complete."""

from __future__ import annotations

import logging
import os
import re
import stat
import time
from pathlib import Path

from artifex_agent.engines.temp_files import NAME_MAX, TEMP_DIR, TEMP_SUFFIX, TempFile, clean_temp_dir, is_link
from artifex_agent.errors import RequestError

logger = logging.getLogger(__name__)

# Characters Windows refuses in names (":" also opens NTFS alternate data streams).
_WINDOWS_FORBIDDEN = set('<>:"|?*')
# Names that are devices on Windows whatever their extension ("nul.mp4" is the null device).
_WINDOWS_DEVICES = re.compile(r"^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³]|conin\$|conout\$)(\..*)?$", re.IGNORECASE)
_DRIVE = re.compile(r"^[A-Za-z]:")
# Lengths are UTF-8 bytes: what Linux counts (Windows counts UTF-16 units, never more).
MAX_NAME_BYTES = 1024
# An output's file name leaves room for what is derived from it: the temporary's tag (25 bytes)
# and a clip number ("_12") when a stream is split into clips.
MAX_OUTPUT_FILE_BYTES = 200
_SHOWN = 60


def _shown(name: str) -> str:
    """`name` quoted for a message, cut short: a 10,000-character name is not sent back whole."""
    return repr(name) if len(name) <= _SHOWN else repr(name[:_SHOWN]) + f"… ({len(name)} characters)"


def _size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _split_name(name: str) -> list[str]:
    """Check `name` without touching the disk and return its components."""
    if not isinstance(name, str) or not name.strip():
        raise RequestError("output name is empty")
    shown = _shown(name)
    if _size(name) > MAX_NAME_BYTES:
        raise RequestError(f"name {shown} is {_size(name)} bytes long; the limit is {MAX_NAME_BYTES} bytes (UTF-8)")
    if "\x00" in name:
        raise RequestError("output name contains a NUL character")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        raise RequestError(f"name {shown} contains an invalid character (a lone UTF-16 surrogate)")
    if name.startswith(("/", "\\")):
        raise RequestError(f"output name {shown} is absolute; give a name relative to the output folder")
    if _DRIVE.match(name):
        raise RequestError(f"output name {shown} names a drive; give a name relative to the output folder")
    # Both PCs read the same names, so "\" is a separator everywhere, not just on Windows.
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or name.replace("\\", "/").endswith("/"):
        raise RequestError(f"output name {shown} names a folder, not a file")
    for part in parts:
        if part == "..":
            raise RequestError(f"output name {shown} contains '..'; names must stay inside the output folder")
        if any(c in _WINDOWS_FORBIDDEN or ord(c) < 32 for c in part):
            raise RequestError(
                f'output name {shown} contains a character not allowed in file names (<>:"|?* or control)'
            )
        if part != part.rstrip(" ."):
            # Windows silently strips these, so two different names would meet on one file.
            raise RequestError(f"output name {shown} has a component ending in a dot or a space")
        if _WINDOWS_DEVICES.match(part):
            raise RequestError(f"output name {shown} uses a reserved Windows device name ({_shown(part)})")
        if _size(part) > NAME_MAX:
            raise RequestError(f"name {shown} has a component of {_size(part)} bytes; the limit is {NAME_MAX} bytes "
                               "(UTF-8)")
    return parts


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def safe_output_path(root: Path, name: str, *, suffix: str = ".mp4") -> Path:
    """The path for output `name` under `root`, creating its folders; no link inside `root` is ever followed."""
    parts = _split_name(name)
    if suffix and not parts[-1].lower().endswith(suffix.lower()):
        parts[-1] += suffix
    if _size(parts[-1]) > MAX_OUTPUT_FILE_BYTES:
        raise RequestError(f"output file name {_shown(parts[-1])} is {_size(parts[-1])} bytes long; the limit is "
                           f"{MAX_OUTPUT_FILE_BYTES} bytes (UTF-8), which leaves room for temporary and clip names")
    root.mkdir(parents=True, exist_ok=True)
    # The root itself may be a link the operator chose; below it, a link could have been planted
    # by anyone who writes to the share, so none is followed, even one that stays inside.
    current = root.resolve()
    for part in parts[:-1]:
        current = current / part
        try:
            current.mkdir()
        except FileExistsError:
            pass
        _refuse_link(current, name, must_exist=True)
        if not current.is_dir():
            raise RequestError(f"output name {_shown(name)}: {_shown(part)} exists and is not a folder")
    final = current / parts[-1]
    st = _refuse_link(final, name, must_exist=False)
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise RequestError(f"output name {_shown(name)} is an existing folder")
    return final


def _refuse_link(path: Path, name: str, *, must_exist: bool) -> os.stat_result | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if must_exist:
            raise
        return None
    if is_link(st):
        raise RequestError(f"output name {_shown(name)} meets a symbolic link at {_shown(path.name)}; links inside "
                           "the output folder are never followed (they could lead anywhere)")
    return st


def confined_path(root: Path, name: str) -> Path:
    """The path of existing-or-not file `name` under `root` (inputs, models); nothing is created."""
    parts = _split_name(name)
    real_root = root.resolve()
    path = real_root.joinpath(*parts)
    # Symlinks are followed, and must land inside the root too: the drop folder is writable by clients.
    if not _inside(path.resolve(), real_root):
        raise RequestError(f"name {_shown(name)} leads outside its folder")
    return path


def sweep_parts(root: Path, *, min_age_s: float = 300.0) -> int:
    """Delete dead temporaries under `root`; return how many went.

    In each .tmp/ folder a temporary whose writer's lock is free goes at once; one whose lock
    cannot be tested or trusted (another PC's, a filesystem without locks) after `min_age_s`.
    NAME.part files beside outputs (the layout before .tmp/) have no lock and go by age.
    """
    # The age guard matters when both PCs write to one shared output folder: a fresh .part
    # may be the other agent's encode in progress, not a leftover of our own crash.
    if not root.is_dir():
        return 0
    removed = 0
    cutoff = time.time() - min_age_s
    for folder, dirs, files in os.walk(root, followlinks=False):
        if TEMP_DIR in dirs:
            dirs.remove(TEMP_DIR)
            try:
                removed += clean_temp_dir(Path(folder) / TEMP_DIR, min_age_s=min_age_s)
            except OSError as exc:
                logger.warning("cannot clean %s: %s", Path(folder) / TEMP_DIR, exc.strerror)
        for fname in files:
            if not fname.endswith(TEMP_SUFFIX):
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
            logger.info("removed stale %s", path)
            removed += 1
    return removed


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the whole new one, never a torn one."""
    with TempFile(path) as tmp:
        tmp.file.write(data)
        tmp.publish()

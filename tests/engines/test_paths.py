"""Output names stay inside the output root; files appear only when complete."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from artifex_agent.engines.paths import (
    atomic_write_bytes,
    confined_path,
    part_path,
    safe_output_path,
    sweep_parts,
)
from artifex_agent.errors import RequestError

BAD_NAMES = {
    "empty": "",
    "blank": "   ",
    "posix_absolute": "/etc/passwd",
    "backslash_absolute": "\\windows\\x",
    "drive": "C:\\x",
    "drive_relative": "c:x",
    "drive_forward": "D:/videos/x",
    "unc": "\\\\server\\share\\x",
    "unc_forward": "//server/share/x",
    "dotdot": "../x",
    "dotdot_inside": "a/../../x",
    "dotdot_backslash": "a\\..\\..\\x",
    "dotdot_alone": "..",
    "nul": "x\x00y",
    "stream": "clip.mp4:hidden",
    "device": "con.mp4",
    "device_in_folder": "a/NUL",
    "trailing_dot": "a./b",
    "folder": "a/",
    "control": "a\nb",
    "too_long": "x" * 300,
}


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    root = tmp_path / "out"
    with pytest.raises(RequestError):
        safe_output_path(root, name)
    # Nothing was created outside the root while refusing.
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["out"])


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_bad_names_are_refused_for_reading_too(tmp_path: Path, name: str) -> None:
    with pytest.raises(RequestError):
        confined_path(tmp_path, name)


def test_confined_path_finds_files_without_creating_anything(tmp_path: Path) -> None:
    (tmp_path / "upscale").mkdir()
    (tmp_path / "upscale" / "4x.pth").write_bytes(b"x")
    assert confined_path(tmp_path, "upscale\\4x.pth") == tmp_path.resolve() / "upscale" / "4x.pth"
    assert confined_path(tmp_path, "new/img.png") == tmp_path.resolve() / "new" / "img.png"
    assert not (tmp_path / "new").exists()


def test_confined_path_refuses_symlink_leading_outside(tmp_path: Path) -> None:
    root = tmp_path / "inputs"
    root.mkdir()
    (tmp_path / "secret.png").write_bytes(b"x")
    _symlink(root / "img.png", tmp_path / "secret.png")
    with pytest.raises(RequestError, match="outside"):
        confined_path(root, "img.png")


def test_plain_name_gets_suffix_under_root(tmp_path: Path) -> None:
    assert safe_output_path(tmp_path, "clip") == tmp_path.resolve() / "clip.mp4"
    assert safe_output_path(tmp_path, "clip.MP4") == tmp_path.resolve() / "clip.MP4"
    assert safe_output_path(tmp_path, "clip.webm", suffix=".webm").name == "clip.webm"
    assert safe_output_path(tmp_path, "clip.webm").name == "clip.webm.mp4"
    assert safe_output_path(tmp_path, "notes", suffix="").name == "notes"


def test_nested_name_creates_folders_inside_root(tmp_path: Path) -> None:
    p = safe_output_path(tmp_path / "out", "day1\\shots/./take 2")
    assert p == (tmp_path / "out").resolve() / "day1" / "shots" / "take 2.mp4"
    assert p.parent.is_dir()
    assert not p.exists()


def _symlink(link: Path, target: Path) -> None:
    try:
        link.symlink_to(target, target_is_directory=target.is_dir())
    except OSError:
        pytest.skip("symlinks are not available here")


def test_symlinked_folder_leading_outside_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "out", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    _symlink(root / "escape", outside)
    with pytest.raises(RequestError, match="outside"):
        safe_output_path(root, "escape/sub/clip")
    assert not (outside / "sub").exists()


def test_symlinked_file_leading_outside_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "out"
    root.mkdir()
    _symlink(root / "clip.mp4", tmp_path / "victim.mp4")
    with pytest.raises(RequestError, match="outside"):
        safe_output_path(root, "clip")


def test_symlink_inside_root_is_allowed(tmp_path: Path) -> None:
    root = tmp_path / "out"
    (root / "real").mkdir(parents=True)
    _symlink(root / "alias", root / "real")
    assert safe_output_path(root, "alias/clip").parent.resolve() == (root / "real").resolve()


def test_existing_folder_is_not_an_output(tmp_path: Path) -> None:
    (tmp_path / "clip.mp4").mkdir()
    with pytest.raises(RequestError, match="folder"):
        safe_output_path(tmp_path, "clip")


def test_part_path_appends_part() -> None:
    assert part_path(Path("a/name.mp4")) == Path("a/name.mp4.part")


def test_sweep_parts_removes_only_stale_parts(tmp_path: Path) -> None:
    old = tmp_path / "a" / "old.mp4.part"
    fresh = tmp_path / "fresh.mp4.part"
    keep = tmp_path / "a" / "done.mp4"
    old.parent.mkdir()
    for p in (old, fresh, keep):
        p.write_bytes(b"x")
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    assert sweep_parts(tmp_path) == 1
    assert not old.exists() and fresh.exists() and keep.exists()
    assert sweep_parts(tmp_path, min_age_s=0) == 1
    assert not fresh.exists() and keep.exists()
    assert sweep_parts(tmp_path / "missing") == 0


def test_atomic_write_bytes_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert not part_path(target).exists()


def test_atomic_write_bytes_failure_leaves_no_part(tmp_path: Path) -> None:
    target = tmp_path / "missing-folder" / "state.json"
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"x")
    assert not part_path(target).exists()

"""Output names stay inside the output root; files appear only when complete."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from artifex_agent.engines.paths import (
    MAX_OUTPUT_FILE_BYTES,
    atomic_write_bytes,
    confined_path,
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
    symlink_or_skip(root / "img.png", tmp_path / "secret.png")
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


def symlink_or_skip(link: Path, target: Path) -> None:
    """Make `link` point at `target`, or skip where symlinks cannot be made (Windows without the privilege)."""
    try:
        link.symlink_to(target, target_is_directory=target.is_dir())
    except OSError:
        pytest.skip("symlinks are not available here")


def test_symlinked_folder_leading_outside_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "out", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    symlink_or_skip(root / "escape", outside)
    with pytest.raises(RequestError, match="symbolic link"):
        safe_output_path(root, "escape/sub/clip")
    assert not (outside / "sub").exists()


def test_symlinked_file_leading_outside_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "out"
    root.mkdir()
    symlink_or_skip(root / "clip.mp4", tmp_path / "victim.mp4")
    with pytest.raises(RequestError, match="symbolic link"):
        safe_output_path(root, "clip")


def test_symlinked_root_is_the_operators_choice(tmp_path: Path) -> None:
    (tmp_path / "disk").mkdir()
    symlink_or_skip(tmp_path / "out", tmp_path / "disk")
    assert safe_output_path(tmp_path / "out", "a/clip") == (tmp_path / "disk" / "a" / "clip.mp4").resolve()


def test_existing_folder_is_not_an_output(tmp_path: Path) -> None:
    (tmp_path / "clip.mp4").mkdir()
    with pytest.raises(RequestError, match="folder"):
        safe_output_path(tmp_path, "clip")


def test_sweep_parts_removes_only_stale_parts_of_the_old_layout(tmp_path: Path) -> None:
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
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp", "state.json"]
    assert not list((tmp_path / ".tmp").iterdir())


def test_atomic_write_bytes_failure_leaves_no_part(tmp_path: Path) -> None:
    target = tmp_path / "missing-folder" / "state.json"
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"x")
    assert not target.parent.exists()


def plant_link_to_victim(link: Path) -> Path:
    """Make `link` (and its folder) point at a precious file outside, as an attacker on the share would."""
    victim = link.parent.parent / "elsewhere" / "victim.bin"
    victim.parent.mkdir()
    victim.write_bytes(b"precious")
    link.parent.mkdir(exist_ok=True)
    symlink_or_skip(link, victim)
    return victim


def test_planted_part_symlink_is_not_written_through_by_atomic_write_bytes(tmp_path: Path) -> None:
    victim = plant_link_to_victim(tmp_path / "failed" / "job.toml.error.txt.part")
    note = tmp_path / "failed" / "job.toml.error.txt"
    atomic_write_bytes(note, b"why it failed")
    assert victim.read_bytes() == b"precious"
    assert not note.is_symlink() and note.read_bytes() == b"why it failed"


def test_symlinked_folder_inside_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "out"
    (root / "real").mkdir(parents=True)
    symlink_or_skip(root / "alias", root / "real")
    with pytest.raises(RequestError, match="symbolic link"):
        safe_output_path(root, "alias/clip")


def test_symlinked_final_name_inside_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "out"
    root.mkdir()
    (root / "other.mp4").write_bytes(b"x")
    symlink_or_skip(root / "clip.mp4", root / "other.mp4")
    with pytest.raises(RequestError, match="symbolic link"):
        safe_output_path(root, "clip")


def test_250_character_output_name_is_refused_naming_the_limit(tmp_path: Path) -> None:
    with pytest.raises(RequestError, match=f"{MAX_OUTPUT_FILE_BYTES} bytes"):
        safe_output_path(tmp_path, "x" * 250)


def test_name_length_counts_bytes_not_characters(tmp_path: Path) -> None:
    with pytest.raises(RequestError, match=f"{MAX_OUTPUT_FILE_BYTES} bytes"):
        safe_output_path(tmp_path, "é" * 120)
    fits = "é" * ((MAX_OUTPUT_FILE_BYTES - len(".mp4")) // 2)
    assert safe_output_path(tmp_path, fits).name == fits + ".mp4"


def test_long_nested_name_is_refused_before_touching_the_disk(tmp_path: Path) -> None:
    root = tmp_path / "out"
    with pytest.raises(RequestError, match="1024"):
        safe_output_path(root, "a/" * 600 + "x")
    assert not root.exists()


def test_huge_name_is_not_echoed_back_whole(tmp_path: Path) -> None:
    with pytest.raises(RequestError) as caught:
        confined_path(tmp_path, "m" * 10_000)
    assert len(str(caught.value)) < 300


def test_name_with_a_lone_surrogate_is_a_request_error(tmp_path: Path) -> None:
    with pytest.raises(RequestError, match="character"):
        safe_output_path(tmp_path, "clip\udc80")


def test_note_with_a_name_near_the_file_system_limit_is_written(tmp_path: Path) -> None:
    target = tmp_path / ("n" * 252)
    atomic_write_bytes(target, b"x")
    assert target.read_bytes() == b"x"

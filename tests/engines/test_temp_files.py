"""Temporaries: created exclusively out of sight, never through a link, and cleaned when their writer is dead."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from artifex_agent.engines import temp_files
from artifex_agent.engines.paths import sweep_parts
from artifex_agent.engines.temp_files import NAME_MAX, TempFile, temp_name
from tests.engines.test_paths import symlink_or_skip

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="kills, locks and links are tested on Linux")


@pytest.fixture(params=["dir_fd", "paths"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run a test with folder handles (Linux, macOS) and with plain paths (what Windows gets)."""
    if request.param == "paths":
        monkeypatch.setattr(temp_files, "_DIR_FDS", False)
    yield request.param


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def _temps(folder: Path) -> list[str]:
    tmp = folder / ".tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.is_dir() else []


def _killed_writer(final: Path) -> Path:
    """A temporary left by a writer killed with SIGKILL mid-write, as after kill -9 of an agent."""
    code = ("import os, signal, sys\n"
            "from pathlib import Path\n"
            "from artifex_agent.engines.temp_files import TempFile\n"
            "t = TempFile(Path(sys.argv[1]))\n"
            "t.file.write(b'x' * 48)\n"
            "print(t.name, flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(final)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    dead = final.parent / ".tmp" / proc.stdout.strip()
    assert dead.is_file()
    return dead


def _foreign(folder: Path, final_name: str) -> Path:
    """A temporary with another PC's host tag: its lock cannot be trusted from here."""
    host = "000000" if temp_files._HOST != "000000" else "111111"
    (folder / ".tmp").mkdir(exist_ok=True)
    path = folder / ".tmp" / f"{final_name}.{host}-{'ab' * 6}.part"
    path.write_bytes(b"x")
    return path


def test_publish_moves_the_whole_file_into_place(tmp_path: Path, mode: str) -> None:
    final = tmp_path / "clip.mp4"
    with TempFile(final) as t:
        t.file.write(b"video")
        assert t.path.parent == tmp_path / ".tmp" and t.path.name.startswith("clip.mp4.")
        assert not final.exists()
        t.publish()
    assert final.read_bytes() == b"video"
    assert _temps(tmp_path) == []


def test_an_error_while_writing_leaves_nothing(tmp_path: Path, mode: str) -> None:
    final = tmp_path / "clip.mp4"
    with pytest.raises(ZeroDivisionError):
        with TempFile(final) as t:
            t.file.write(b"half")
            1 / 0  # noqa: B018
    assert not final.exists() and _temps(tmp_path) == []


def test_a_failed_publish_can_still_be_discarded(tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "clip.mp4").mkdir()  # the rename cannot replace a folder
    monkeypatch.chdir(tmp_path)
    t = TempFile(tmp_path / "clip.mp4")
    with pytest.raises(OSError):
        t.publish()
    t.discard()
    t.discard()
    assert _temps(tmp_path) == [] and (tmp_path / "clip.mp4").is_dir()


def test_planted_tmp_folder_link_is_refused(tmp_path: Path, mode: str) -> None:
    elsewhere = tmp_path / "elsewhere"
    out = tmp_path / "out"
    elsewhere.mkdir()
    out.mkdir()
    symlink_or_skip(out / ".tmp", elsewhere)
    with pytest.raises(OSError, match="symbolic link"):
        TempFile(out / "clip.mp4")
    assert not list(elsewhere.iterdir())


def test_planted_tmp_file_is_refused(tmp_path: Path, mode: str) -> None:
    (tmp_path / ".tmp").write_bytes(b"not a folder")
    with pytest.raises(OSError):
        TempFile(tmp_path / "clip.mp4")


def test_folder_that_is_a_link_is_refused(tmp_path: Path, mode: str) -> None:
    (tmp_path / "real").mkdir()
    symlink_or_skip(tmp_path / "alias", tmp_path / "real")
    with pytest.raises(OSError, match="symbolic link"):
        TempFile(tmp_path / "alias" / "clip.mp4")
    assert not list((tmp_path / "real").iterdir())


def test_final_name_that_is_a_link_is_replaced_not_written_through(tmp_path: Path, mode: str) -> None:
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"precious")
    (tmp_path / "out").mkdir()
    final = tmp_path / "out" / "clip.mp4"
    symlink_or_skip(final, victim)
    with TempFile(final) as t:
        t.file.write(b"video")
        t.publish()
    assert victim.read_bytes() == b"precious"
    assert not final.is_symlink() and final.read_bytes() == b"video"


def test_temporary_names_fit_and_tell_their_final_name() -> None:
    long = "n" * NAME_MAX
    assert len(temp_name(long).encode()) <= NAME_MAX
    assert temp_name(long).startswith("n" * 200)
    assert temp_name("clip.mp4").startswith("clip.mp4.") and temp_name("clip.mp4") != temp_name("clip.mp4")
    # A cut never splits a character.
    assert len(temp_name("é" * 200).encode()) <= NAME_MAX


def test_the_muxer_may_only_read_its_output_back(tmp_path: Path) -> None:
    with TempFile(tmp_path / "clip.mp4") as t:
        t.file.write(b"0123456789")
        reader = t.reopen("whatever", 1, {})
        reader.seek(4)
        assert reader.read(3) == b"456"
        assert t.file.tell() == 10  # the writer's position is untouched
        with pytest.raises(PermissionError):
            t.reopen("whatever", 2, {})
        t.discard()


def test_a_killed_writers_temporary_goes_when_the_same_name_is_written_again(tmp_path: Path) -> None:
    final = tmp_path / "clip.mp4"
    dead = _killed_writer(final)
    other = _killed_writer(tmp_path / "other.mp4")
    _age(dead, 10)
    _age(other, 10)
    with TempFile(final) as t:
        assert not dead.exists()
        assert other.exists()  # another output's leftover waits for its own retry or the sweep
        t.discard()


def test_a_just_killed_writers_temporary_waits_out_the_lock_grace(tmp_path: Path) -> None:
    # Between creating its file and locking it a writer looks dead for an instant.
    final = tmp_path / "clip.mp4"
    dead = _killed_writer(final)
    with TempFile(final) as t:
        assert dead.exists()
        t.discard()


def test_a_live_writers_temporary_is_kept_however_old(tmp_path: Path) -> None:
    final = tmp_path / "clip.mp4"
    with TempFile(final) as first:
        _age(first.path, 3600)
        with TempFile(final) as second:
            assert first.path.exists()
            second.discard()
        assert sweep_parts(tmp_path, min_age_s=0) == 0
        assert first.path.exists()
        first.discard()


def test_another_pcs_temporary_goes_only_by_age(tmp_path: Path) -> None:
    final = tmp_path / "clip.mp4"
    foreign = _foreign(tmp_path, "clip.mp4")
    with TempFile(final) as t:
        assert foreign.exists()  # it may be the other agent's encode in progress
        t.discard()
    _age(foreign, 301)
    with TempFile(final) as t:
        assert not foreign.exists()
        t.discard()


def test_sweep_removes_dead_temporaries_at_once_and_old_parts_by_age(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    dead = _killed_writer(tmp_path / "jobs" / "a.mp4")
    _age(dead, 10)
    foreign = _foreign(tmp_path / "jobs", "b.mp4")
    old_layout = tmp_path / "jobs" / "c.mp4.part"
    old_layout.write_bytes(b"x")
    stranger = tmp_path / "jobs" / ".tmp" / "notes.txt"
    stranger.write_bytes(b"not ours")
    with TempFile(tmp_path / "d.mp4") as live:
        _age(live.path, 3600)
        assert sweep_parts(tmp_path) == 1
        assert not dead.exists()
        assert foreign.exists() and old_layout.exists() and live.path.exists() and stranger.exists()
        _age(foreign, 301)
        _age(old_layout, 301)
        assert sweep_parts(tmp_path) == 2
        assert live.path.exists() and stranger.exists()
        live.discard()


def test_sweep_follows_no_link(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    out = tmp_path / "out"
    elsewhere.mkdir()
    out.mkdir()
    bait = elsewhere / f"x.mp4.{temp_files._HOST}-{'cd' * 6}.part"
    bait.write_bytes(b"precious")
    _age(bait, 3600)
    symlink_or_skip(out / ".tmp", elsewhere)
    symlink_or_skip(out / "linked", elsewhere)
    (out / "real" / ".tmp").mkdir(parents=True)
    symlink_or_skip(out / "real" / ".tmp" / bait.name, bait)
    assert sweep_parts(out, min_age_s=0) == 0
    assert bait.read_bytes() == b"precious"

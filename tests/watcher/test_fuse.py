"""A FUSE mount stands in for a network share: writes behind it raise no inotify event, polling sees them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.api import BaseObserver

from artifex_agent.watcher.names import Layout
from artifex_agent.watcher.observer import choose_mode, make_observer
from tests.watcher.conftest import RecordingSubmitter, job_text, make_cluster, running, wait_for


def _fuse_unavailable() -> str:
    if not sys.platform.startswith("linux"):
        return "FUSE mounts are tested on Linux only"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing (no FUSE in this kernel or container)"
    if not (shutil.which("fusermount3") or shutil.which("fusermount")):
        return "fusermount3 is not installed (apt-get install fuse3; scripts/system-deps.sh does it as root)"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"mfusepy cannot load libfuse ({exc}); pip install -e .[dev] and apt-get install fuse3"
    return ""


def _mounted(mountpoint: Path) -> bool:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return any(line.split()[4] == str(mountpoint) for line in f)


@pytest.fixture
def fuse_share(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(backing folder, mount point) of a passthrough FUSE mount, unmounted afterwards."""
    reason = _fuse_unavailable()
    if reason:
        pytest.skip(reason)
    backing, mount = tmp_path / "server-disk", tmp_path / "share"
    backing.mkdir()
    mount.mkdir()
    log = open(tmp_path / "fuse.log", "wb")  # noqa: SIM115 - the daemon's for its lifetime
    proc = subprocess.Popen([sys.executable, "-m", "tests.watcher.fusefs", str(backing), str(mount)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2])
    try:
        deadline = time.monotonic() + 15
        while not _mounted(mount):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.skip(f"cannot mount FUSE here: {(tmp_path / 'fuse.log').read_text()[-400:]}")
            time.sleep(0.05)
        yield backing, mount
    finally:
        subprocess.run([shutil.which("fusermount3") or "fusermount", "-u", "-z", str(mount)], check=False,
                       capture_output=True)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


class _Seen(FileSystemEventHandler):
    def __init__(self) -> None:
        self.paths: set[str] = set()

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.paths.add(os.path.basename(os.fsdecode(event.dest_path or event.src_path)))


def _observe(mode: str, folder: Path) -> tuple[BaseObserver, _Seen]:
    seen = _Seen()
    obs = make_observer(mode, 0.1)  # type: ignore[arg-type]
    obs.schedule(seen, str(folder), recursive=False)
    obs.start()
    return obs, seen


def test_writes_behind_the_mount_are_missed_by_inotify_and_seen_by_polling(fuse_share: tuple[Path, Path]) -> None:
    backing, mount = fuse_share
    native, by_inotify = _observe("native", mount)
    polling, by_polling = _observe("polling", mount)
    try:
        time.sleep(0.3)
        (backing / "from-the-other-pc.toml").write_text("x")  # behind the mount
        (mount / "from-this-pc.toml").write_text("x")  # through the mount
        wait_for(lambda: {"from-the-other-pc.toml", "from-this-pc.toml"} <= by_polling.paths, timeout=5,
                 what="polling to see both files")
        wait_for(lambda: "from-this-pc.toml" in by_inotify.paths, timeout=5, what="inotify to see the local write")
        time.sleep(0.5)
        assert "from-the-other-pc.toml" not in by_inotify.paths
    finally:
        for obs in (native, polling):
            obs.stop()
            obs.join(5)


def test_watcher_polls_on_fuse_and_takes_files_written_behind_it(fuse_share: tuple[Path, Path], tmp_path: Path,
                                                                 submitter: RecordingSubmitter) -> None:
    backing, mount = fuse_share
    assert choose_mode(mount).mode == "polling"
    cluster = make_cluster(tmp_path, root=mount / "drop")
    with running(cluster, submitter) as w:
        assert w.mode is not None and w.mode.mode == "polling" and w.mode.fstype.startswith("fuse")
        part = backing / "drop" / "inbox" / "remote.toml.part"
        part.write_text(job_text())
        part.rename(part.with_name("remote.toml"))
        wait_for(lambda: (Layout(mount / "drop").accepted / "remote.toml").exists(), timeout=10,
                 what="the watcher to take a file written behind the mount")
    assert submitter.calls == 1


@pytest.mark.slow
def test_forced_native_watcher_does_not_hear_writes_behind_the_mount(fuse_share: tuple[Path, Path], tmp_path: Path,
                                                                     submitter: RecordingSubmitter) -> None:
    backing, mount = fuse_share
    cluster = make_cluster(tmp_path, root=mount / "drop", mode="native", poll_interval_s=0.1)
    with running(cluster, submitter):
        (backing / "drop" / "inbox" / "remote.toml").write_text(job_text())
        time.sleep(2.0)  # polling takes it within ~0.3 s; native waits for its 5 s safety rescan
        assert submitter.calls == 0
        wait_for(lambda: submitter.calls == 1, timeout=10, what="the safety rescan")

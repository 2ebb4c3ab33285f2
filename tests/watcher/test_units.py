"""The watcher's rules on their own: names, completeness, claims, filesystem detection."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from artifex_agent.errors import ConfigError
from artifex_agent.lockfile import InstanceLock
from artifex_agent.watcher import claim as claims
from artifex_agent.watcher import names
from artifex_agent.watcher.ledger import Ledger, Record
from artifex_agent.watcher.names import Layout
from artifex_agent.watcher.observer import (
    choose_mode,
    is_network_fstype,
    linux_mounts,
    mount_fstype,
    windows_drive_kind,
)
from artifex_agent.watcher.scan import Stability, list_entries, looks_renamed_in

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:35 / /data/cache rw,relatime shared:20 - nfs4 10.0.0.1:/exports/cache rw,vers=4.2
41 22 0:36 / /mnt/my\\040share rw,relatime shared:21 - cifs //10.0.0.1/cache rw
42 22 0:37 / /mnt/sshfs rw,nosuid shared:22 - fuse.sshfs pc1:/data rw
43 22 0:38 / /mnt/usb rw shared:23 - fuseblk /dev/sdb1 rw
44 22 0:39 / /mnt/c rw - 9p drvfs rw
"""


@pytest.mark.parametrize("path, fstype, network", [
    ("/data/cache/drop/inbox", "nfs4", True),
    ("/data/cachet", "ext4", False),
    ("/mnt/my share/drop", "cifs", True),
    ("/mnt/sshfs/x", "fuse.sshfs", True),
    ("/mnt/usb/drop", "fuseblk", False),
    ("/mnt/c/Users", "9p", True),
    ("/home/me", "ext4", False),
])
def test_filesystem_type_comes_from_the_longest_mount_point(path: str, fstype: str, network: bool,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("artifex_agent.watcher.observer._existing", lambda p: Path(p))
    found = mount_fstype(Path(path), linux_mounts(MOUNTINFO))
    assert found == fstype and is_network_fstype(found) is network


@pytest.mark.parametrize("path, drive_type, network", [
    ("\\\\pc1\\cache\\drop", None, True),
    ("//pc1/cache/drop", None, True),
    ("\\\\?\\UNC\\pc1\\cache\\drop", None, True),
    ("Z:\\drop", 4, True),  # DRIVE_REMOTE: a mapped network drive
    ("C:\\drop", 3, False),  # DRIVE_FIXED
    ("\\\\?\\C:\\drop", 3, False),
])
def test_windows_unc_paths_and_mapped_drives_are_network(path: str, drive_type: int | None, network: bool) -> None:
    seen: list[str] = []

    def get_drive_type(root: str) -> int:
        seen.append(root)
        return drive_type or 0

    assert windows_drive_kind(path, get_drive_type)[0] is network
    if drive_type is not None:
        assert seen and seen[0].endswith(":\\")


def test_local_disk_is_native_unless_polling_is_forced(tmp_path: Path) -> None:
    assert choose_mode(tmp_path).mode == "native"
    assert choose_mode(tmp_path, force_polling=True).mode == "polling"
    assert choose_mode(tmp_path, "polling").mode == "polling"


@pytest.mark.parametrize("name, ignored", [
    ("a.toml.part", True), (".a.toml", True), ("~$a.toml", True), ("a.tmp", True), ("a.toml~", True),
    ("Thumbs.db", True), ("a.toml", False), ("shot_001", False), ("clip.mp4", False),
])
def test_temporary_and_hidden_names_are_ignored(name: str, ignored: bool) -> None:
    assert names.is_ignored(name) is ignored


def test_unique_name_keeps_the_extension(tmp_path: Path) -> None:
    assert names.unique_name(tmp_path, "a.toml", "abcd") == "a.toml"
    (tmp_path / "a.toml").touch()
    assert names.unique_name(tmp_path, "a.toml", "abcd") == "a.abcd.toml"
    (tmp_path / "a.abcd.toml").touch()
    assert names.unique_name(tmp_path, "a.toml", "abcd") == "a.abcd-1.toml"


def test_frames_sort_naturally() -> None:
    assert sorted(["f10.png", "f2.png", "f1.png"], key=names.natural_key) == ["f1.png", "f2.png", "f10.png"]


def test_an_entry_is_complete_only_after_it_stood_still() -> None:
    s = Stability(settle_s=1.0)
    p = Path("/x")
    assert not s.ready(p, (10, 1), now=0.0)
    assert not s.ready(p, (20, 2), now=0.9)  # grew: clock restarts
    assert not s.ready(p, (20, 2), now=1.5)
    assert s.ready(p, (20, 2), now=1.95)
    s.hint_complete(Path("/y"))  # renamed in: complete at first sight
    assert s.ready(Path("/y"), (5, 5), now=0.0)


def test_folder_renamed_in_differs_from_one_filled_in_place(tmp_path: Path) -> None:
    made = tmp_path / "made"
    made.mkdir()
    (made / "1.png").write_bytes(b"x")
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "inplace").mkdir()
    (frames / "inplace" / "1.png").write_bytes(b"x")
    os.rename(made, frames / "renamed")
    entries = {e.name: e for e in list_entries(frames)}
    assert looks_renamed_in(entries["renamed"]) and not looks_renamed_in(entries["inplace"])


def test_only_one_of_two_racing_claims_wins(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.create()
    wins: list[object] = []
    for round_ in range(50):
        src = layout.inbox / f"r{round_}.toml"
        src.write_text("x")
        barrier = threading.Barrier(2)

        def take(owner: str, src: Path = src, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            c = claims.claim(src, layout, owner, "job")
            if c is not None:
                wins.append(c)

        threads = [threading.Thread(target=take, args=(o,)) for o in ("pc1", "pc2")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(wins) == 50 and len(list(layout.processing.iterdir())) == 50


def test_claim_names_round_trip_and_dead_owners_are_found_without_clocks(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.create()
    (layout.frames / "shot~1").mkdir()
    c = claims.claim(layout.frames / "shot~1", layout, "pc2", "frames")
    assert c is not None and claims.parse(c.path) == c and c.relpath == "frames/shot~1"
    beats = claims.Heartbeats(layout, "pc1", timeout_s=0.0)
    other = claims.Heartbeats(layout, "pc2", timeout_s=0.0)
    other.beat()
    assert not beats.dead("pc2")  # first look only starts the clock
    assert beats.dead("pc2")  # unchanged since: dead (timeout 0)
    other._last_beat = 0
    os.utime(other.path, ns=(1, 1))  # it beat again: alive
    assert not beats.dead("pc2")
    taken = claims.take_over(c, "pc1")
    assert taken is not None and taken.owner == "pc1" and taken.path.exists()


@pytest.mark.skipif(not hasattr(os, "O_NOFOLLOW"), reason="no O_NOFOLLOW on this platform")
def test_instance_lock_does_not_write_through_a_planted_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "w.db.lock").symlink_to(victim)
    with pytest.raises(ConfigError, match="cannot create the lock file"):
        InstanceLock(tmp_path / "w.db", "watcher").acquire()
    assert victim.read_text() == "precious"


def test_ledger_survives_reopening_and_refuses_a_second_watcher(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    lock = InstanceLock(path, "watcher").acquire()
    with pytest.raises(ConfigError, match=f"another watcher already uses {path} \\(pid {os.getpid()} on "):
        InstanceLock(path, "watcher").acquire()
    ledger = Ledger(path)
    ledger.record(Record("k", "inbox/a.toml", "h", "job", "submitted", job_id="j1"))
    ledger.close()
    lock.release()
    again = Ledger(path)
    rec = again.get("k")
    assert rec is not None and rec.job_id == "j1" and again.counts()["submitted"] == 1
    again.close()

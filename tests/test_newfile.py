"""newfile.replacing: a whole new file renamed into place, never written through a link planted at its path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from artifex_agent.newfile import replacing


def test_a_link_at_the_path_is_replaced_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    path = tmp_path / "secret"
    path.symlink_to(victim)
    with replacing(path, 0o600) as f:
        f.write(b"new")
    assert victim.read_bytes() == b"keep me"
    assert not path.is_symlink() and path.read_bytes() == b"new"
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret", "victim"]  # no temporary left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), replacing(path) as f:
        f.write(b"half")
        raise RuntimeError("disk gone")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["config.toml"]

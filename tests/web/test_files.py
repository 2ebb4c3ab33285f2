"""Output files: served only from inside the output roots, and their poster frames."""

from __future__ import annotations

import os
from pathlib import Path

from artifex_agent.config import ClusterConfig
from artifex_agent.web.files import OutputFiles, output_roots
from tests.web.pages import write_mp4


def test_only_existing_files_inside_a_root_are_served(tmp_path: Path) -> None:
    root, outside = tmp_path / "outputs", tmp_path / "private"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    inside = root / "sub" / "clip.mp4"
    inside.write_bytes(b"x")
    secret = outside / "secret.mp4"
    secret.write_bytes(b"y")
    (root / "link.mp4").symlink_to(secret)  # a symlink inside that leads out
    (root / "dir-link").symlink_to(outside, target_is_directory=True)
    files = OutputFiles([root.resolve()], tmp_path / "posters")
    assert files.confined(str(inside)) == inside.resolve()
    assert files.confined(str(root / "sub" / ".." / "sub" / "clip.mp4")) == inside.resolve()
    for refused in (str(secret), str(root / ".." / "private" / "secret.mp4"), str(root / "link.mp4"),
                    str(root / "dir-link" / "secret.mp4"), str(root / "missing.mp4"), str(root / "sub"),
                    "/etc/passwd", "", "clip.mp4\x00", str(root) + "-evil/clip.mp4"):
        assert files.confined(refused) is None, refused


def test_roots_are_the_agents_output_roots_and_web_output_roots(tmp_path: Path) -> None:
    cluster = ClusterConfig.from_dict({
        "web": {"output_roots": [str(tmp_path / "share")]},
        "agents": {"a": {"output_root": str(tmp_path / "a")}, "b": {"output_root": str(tmp_path / "a")}}})
    assert output_roots(cluster) == [(tmp_path / "a").resolve(), (tmp_path / "share").resolve()]


def test_a_poster_is_the_first_frame_made_once_per_file_version(tmp_path: Path) -> None:
    video = write_mp4(tmp_path / "outputs" / "clip.mp4", size=96)
    files = OutputFiles([(tmp_path / "outputs").resolve()], tmp_path / "posters")
    poster = files.poster(video)
    assert poster is not None and poster.read_bytes()[:3] == b"\xff\xd8\xff"
    made = poster.stat().st_mtime_ns
    assert files.poster(video) == poster and poster.stat().st_mtime_ns == made  # cached
    write_mp4(video, size=96, frames=12)  # a new version of the file gets its own poster
    os.utime(video, ns=(made + 10**9, made + 10**9))
    assert files.poster(video) != poster
    broken = tmp_path / "outputs" / "broken.mp4"
    broken.write_bytes(b"not a video")
    assert files.poster(broken) is None

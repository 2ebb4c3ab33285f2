"""Frame folders and videos streamed to a real post agent (a child process), one frame at a time."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from artifex_agent.config import ClusterConfig
from artifex_agent.watcher.names import Layout
from tests.watcher.conftest import RecordingSubmitter, post_cluster, running, wait_for

SIZE = 16


@pytest.fixture
def cluster(post_agent: tuple[ClusterConfig, Path], tmp_path: Path) -> ClusterConfig:
    return post_cluster(post_agent, tmp_path)


def _frames(folder: Path, n: int = 5, size: tuple[int, int] = (SIZE, SIZE), fmt: str = "png") -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        arr = np.full((size[1], size[0], 3), i * 20, np.uint8)
        Image.fromarray(arr).save(folder / f"frame_{i + 1}.{fmt}")
    return folder


def _decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _output(cluster: ClusterConfig, outputs: Path, stem: str) -> Path:
    return outputs / cluster.watcher.output_subdir / f"{stem}.mp4"


def test_folder_with_ready_marker_becomes_an_mp4(cluster: ClusterConfig, post_agent: tuple[ClusterConfig, Path],
                                                 submitter: RecordingSubmitter) -> None:
    layout = Layout(cluster.watcher.root)
    with running(cluster, submitter):
        shot = _frames(layout.frames / "shot1", n=12)  # frame_10 sorts after frame_9
        (shot / "_READY").touch()
        wait_for(lambda: (layout.done / "shot1.result.txt").exists(), timeout=60, what="shot1 done")
    out = _output(cluster, post_agent[1], "shot1")
    assert (layout.done / "shot1.result.txt").read_text().splitlines()[0] == str(out)
    frames = _decoded(out)
    assert len(frames) == 12 and frames[0].shape == (SIZE, SIZE, 3)
    means = [int(f.mean()) for f in frames]
    assert means == sorted(means), "frames must be sent in natural order (frame_2 before frame_10)"


def test_folder_filled_in_place_waits_for_its_marker(cluster: ClusterConfig,
                                                     submitter: RecordingSubmitter) -> None:
    layout = Layout(cluster.watcher.root)
    with running(cluster, submitter):
        _frames(layout.frames / "inplace", n=3)
        import time
        time.sleep(1.0)
        assert (layout.frames / "inplace").is_dir() and not list(layout.done.iterdir())
        (layout.frames / "inplace" / "_READY").touch()
        wait_for(lambda: (layout.done / "inplace.result.txt").exists(), timeout=60)


def test_folder_renamed_in_needs_no_marker_and_jpeg_with_sidecar_upscales(
        cluster: ClusterConfig, post_agent: tuple[ClusterConfig, Path], submitter: RecordingSubmitter,
        mode: str) -> None:
    cluster.watcher.mode = mode  # type: ignore[assignment]
    layout = Layout(cluster.watcher.root)
    layout.create()
    staged = _frames(cluster.watcher.root / "staging" / "jpgs", n=5, fmt="jpg")
    (staged / "_post.toml").write_text('upscale = 2\ncodec = "h264"\ncrf = 30\nfps = 8\noutput = "named/jpgs"\n')
    with running(cluster, submitter):
        os.rename(staged, layout.frames / "jpgs")
        wait_for(lambda: (layout.done / "jpgs.result.txt").exists(), timeout=60, what="jpgs done")
    out = post_agent[1] / cluster.watcher.output_subdir / "named" / "jpgs.mp4"
    frames = _decoded(out)
    assert len(frames) == 5 and frames[0].shape == (2 * SIZE, 2 * SIZE, 3)
    with av.open(str(out)) as c:
        assert float(c.streams.video[0].average_rate) == 8.0


def test_video_file_is_decoded_and_re_encoded(cluster: ClusterConfig, post_agent: tuple[ClusterConfig, Path],
                                              submitter: RecordingSubmitter, tmp_path: Path) -> None:
    layout = Layout(cluster.watcher.root)
    layout.create()
    src = tmp_path / "clip.webm"
    with av.open(str(src), "w") as c:
        s = c.add_stream("libvpx-vp9", rate=10)
        s.width = s.height = SIZE
        s.pix_fmt = "yuv420p"
        for i in range(7):
            frame = av.VideoFrame.from_ndarray(np.full((SIZE, SIZE, 3), i * 30, np.uint8), format="rgb24")
            for packet in s.encode(frame):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    (layout.frames / "clip.post.toml").write_text("crf = 28\n")  # the sidecar comes first
    with running(cluster, submitter):
        os.rename(src, layout.frames / "clip.webm")
        wait_for(lambda: (layout.done / "clip.webm.result.txt").exists(), timeout=60, what="clip done")
    frames = _decoded(_output(cluster, post_agent[1], "clip"))
    assert len(frames) == 7
    assert (layout.done / "clip.post.toml").exists() and not list(layout.frames.iterdir())


def _bad_folder(layout: Layout, name: str) -> Path:
    staging = layout.root / "staging" / name
    if name == "mixed":
        _frames(staging, n=2)
        Image.fromarray(np.zeros((SIZE * 2, SIZE, 3), np.uint8)).save(staging / "frame_3.png")
    elif name == "notimage":
        _frames(staging, n=2)
        (staging / "frame_3.png").write_text("this is not a PNG")
    elif name == "linkout":
        _frames(staging, n=2)
        (staging / "frame_3.png").symlink_to("/etc/hostname")
    elif name == "empty":
        staging.mkdir(parents=True)
    elif name == "badsidecar":
        _frames(staging, n=2)
        (staging / "_post.toml").write_text("upscale = 2\nsharpen = true\n")
    elif name == "corrupt":
        _frames(staging, n=3)
        # A real noise PNG cut short: the header reads, the pixels do not.
        noise = np.random.default_rng(1).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(noise).save(staging / "frame_2.png")
        data = (staging / "frame_2.png").read_bytes()
        (staging / "frame_2.png").write_bytes(data[:len(data) // 2])
    return staging


@pytest.mark.parametrize("name, words", [
    ("mixed", "frames differ in size"),
    ("notimage", "frame_3.png is not a PNG or JPEG"),
    ("linkout", "points outside the shared folder"),
    ("empty", "holds no frames"),
    ("badsidecar", "unknown field(s): sharpen"),
    ("corrupt", "frame_2.png cannot be decoded"),
])
def test_bad_frame_folders_are_quarantined(cluster: ClusterConfig, post_agent: tuple[ClusterConfig, Path],
                                           submitter: RecordingSubmitter, name: str, words: str) -> None:
    layout = Layout(cluster.watcher.root)
    layout.create()
    staged = _bad_folder(layout, name)
    (staged / "_READY").touch()
    with running(cluster, submitter):
        os.rename(staged, layout.frames / name)
        note = wait_for(lambda: (layout.failed / f"{name}.error.txt").exists(), timeout=60, what=f"{name} failed")
        assert note
    assert words in (layout.failed / f"{name}.error.txt").read_text()
    assert not _output(cluster, post_agent[1], name).exists()
    assert not list(post_agent[1].rglob("*.part"))


def test_post_agent_down_leaves_the_folder_claimed_not_failed(cluster: ClusterConfig, tmp_path: Path,
                                                              submitter: RecordingSubmitter) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    down = ClusterConfig(agents=[type(cluster.agents[0])(name="post", roles=["post"], address=f"127.0.0.1:{dead}")],
                         watcher=cluster.watcher)
    layout = Layout(cluster.watcher.root)
    with running(down, submitter):
        shot = _frames(layout.frames / "waiting", n=2)
        (shot / "_READY").touch()
        wait_for(lambda: not (layout.frames / "waiting").exists(), what="the folder claimed")
        import time
        time.sleep(1.5)
        assert [p.name.split("~")[-1] for p in layout.processing.iterdir()] == ["waiting"]
        assert not list(layout.failed.iterdir()) and not list(layout.done.iterdir())

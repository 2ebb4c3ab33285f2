"""Real PyAV encodes: decodable files, atomic publish, NVENC fallback, clear refusals."""

from __future__ import annotations

import hashlib
import os
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from artifex_agent.engines.encode import VideoEncoder, available_encoders
from artifex_agent.engines.paths import MAX_OUTPUT_FILE_BYTES, safe_output_path
from artifex_agent.engines.temp_files import temp_name
from artifex_agent.errors import RequestError
from tests.engines.test_paths import plant_link_to_victim

W, H = 64, 64


def frame(i: int, w: int = W, h: int = H) -> np.ndarray:
    """A moving gradient, so the encoder has real motion to code."""
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([(x * 4 + i * 8) % 256, (y * 4) % 256, np.full_like(x, (i * 10) % 256)], axis=-1)
    return rgb.astype(np.uint8)


def decode(path: Path) -> tuple[int, int, int, Fraction]:
    """(frames, width, height, average rate) by actually decoding the file."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        frames = list(c.decode(stream))
        return len(frames), frames[0].width, frames[0].height, stream.average_rate


def temporaries(path: Path) -> list[Path]:
    tmp = path.parent / ".tmp"
    return list(tmp.iterdir()) if tmp.is_dir() else []


def nothing_left(path: Path) -> bool:
    return not path.exists() and not temporaries(path)


def test_available_encoders_includes_libx264() -> None:
    found = available_encoders()
    assert "libx264" in found
    assert found == available_encoders()


@pytest.mark.parametrize(("codec", "expected"), [("h264", "libx264"), ("hevc", "libx265"), ("h265", "libx265")])
def test_software_encode_is_decodable_and_published(tmp_path: Path, codec: str, expected: str) -> None:
    path = tmp_path / "clip.mp4"
    with VideoEncoder(path, W, H, 16, codec=codec, encoder="software", preset="veryfast") as enc:
        assert len(temporaries(path)) == 1 and not path.exists()
        for i in range(24):
            enc.write(frame(i))
        result = enc.close()
    assert result.encoder == expected
    assert result.codec == ("hevc" if codec == "h265" else codec)
    assert (result.path, result.frames, result.width, result.height) == (path, 24, W, H)
    assert result.bytes == path.stat().st_size
    assert result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not temporaries(path)
    assert decode(path) == (24, W, H, Fraction(16))


def test_vp9_in_webm(tmp_path: Path) -> None:
    path = tmp_path / "clip.webm"
    with VideoEncoder(path, W, H, 24, codec="vp9", preset="ultrafast") as enc:
        enc.write_frames(np.stack([frame(i) for i in range(6)]))
    assert enc.result is not None and enc.result.encoder == "libvpx-vp9"
    assert decode(path)[:3] == (6, W, H)


def test_ntsc_rate_is_kept_as_a_fraction(tmp_path: Path) -> None:
    path = tmp_path / "ntsc.mp4"
    with VideoEncoder(path, W, H, 30000 / 1001, encoder="software") as enc:
        for i in range(4):
            enc.write(frame(i))
    assert decode(path)[3] == Fraction(30000, 1001)


def test_auto_falls_back_to_software_and_says_so(tmp_path: Path) -> None:
    if "h264_nvenc" in available_encoders():
        pytest.skip("NVENC opens here, so auto picks it")
    with VideoEncoder(tmp_path / "auto.mp4", W, H, 16, encoder="auto") as enc:
        enc.write(frame(0))
        result = enc.close()
    assert result.encoder == "libx264"


def test_explicit_nvenc_without_nvenc_is_refused(tmp_path: Path) -> None:
    if "h264_nvenc" in available_encoders():
        pytest.skip("NVENC opens here")
    path = tmp_path / "nv.mp4"
    with pytest.raises(RequestError, match="h264_nvenc"):
        VideoEncoder(path, W, H, 16, encoder="nvenc")
    assert nothing_left(path)


def test_nvenc_has_no_vp9(tmp_path: Path) -> None:
    with pytest.raises(RequestError, match="NVENC"):
        VideoEncoder(tmp_path / "x.webm", W, H, 16, codec="vp9", encoder="nvenc")


def test_wrong_frame_size_is_refused_and_abort_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bad.mp4"
    enc = VideoEncoder(path, W, H, 16, encoder="software")
    for i in range(12):
        enc.write(frame(i))
    with pytest.raises(RequestError, match="frame 12 is 64x48, expected 64x64"):
        enc.write(frame(12, h=48))
    with pytest.raises(RequestError, match="uint8"):
        enc.write(frame(12).astype(np.float32))
    enc.abort()
    enc.abort()
    assert nothing_left(path)


def test_exception_inside_with_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "boom.mp4"
    with pytest.raises(ZeroDivisionError):
        with VideoEncoder(path, W, H, 16, encoder="software") as enc:
            enc.write(frame(0))
            1 / 0  # noqa: B018
    assert nothing_left(path)


def test_no_frames_is_an_error_and_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    with pytest.raises(RequestError, match="no frames"):
        with VideoEncoder(path, W, H, 16, encoder="software"):
            pass
    assert nothing_left(path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 63}, "even"),
        ({"codec": "mpeg2"}, "unknown codec"),
        ({"crf": 60}, "crf 60"),
        ({"preset": "warp"}, "unknown preset"),
        ({"fps": 0}, "fps"),
        ({"pix_fmt": "rgb48le"}, "cannot encode"),
        ({"encoder": "quantum"}, "unknown encoder"),
    ],
)
def test_bad_settings_are_refused_and_leave_nothing(tmp_path: Path, kwargs: dict, message: str) -> None:
    path = tmp_path / "x.mp4"
    args = {"width": W, "height": H, "fps": 16, **kwargs}
    with pytest.raises(RequestError, match=message):
        VideoEncoder(path, **args)
    assert nothing_left(path)


def test_webm_cannot_hold_h264(tmp_path: Path) -> None:
    with pytest.raises(RequestError, match="webm"):
        VideoEncoder(tmp_path / "x.webm", W, H, 16, codec="h264")


def test_unwritable_destination_is_an_os_error_not_a_settings_error(tmp_path: Path) -> None:
    path = tmp_path / "no-such-folder" / "x.mp4"
    with pytest.raises(OSError, match="cannot create"):
        VideoEncoder(path, W, H, 16)
    assert nothing_left(path)


def test_planted_part_symlink_is_not_written_through(tmp_path: Path) -> None:
    victim = plant_link_to_victim(tmp_path / "out" / "victim.mp4.part")
    path = safe_output_path(tmp_path / "out", "victim")
    with VideoEncoder(path, W, H, 16, encoder="software") as enc:
        for i in range(4):
            enc.write(frame(i))
    assert victim.read_bytes() == b"precious"
    assert not path.is_symlink()
    assert decode(path)[0] == 4


def test_temporary_stays_out_of_sight_while_encoding(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    with VideoEncoder(path, W, H, 16, encoder="software") as enc:
        enc.write(frame(0))
        assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == []
        temps = [p.name for p in (tmp_path / ".tmp").iterdir()]
        assert len(temps) == 1 and temps[0].startswith("clip.mp4.")
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["clip.mp4"]


def test_longest_allowed_name_encodes_with_room_for_its_temporary(tmp_path: Path) -> None:
    name = "n" * (MAX_OUTPUT_FILE_BYTES - len(".mp4"))
    path = safe_output_path(tmp_path, name)
    with VideoEncoder(path, W, H, 16, encoder="software") as enc:
        enc.write(frame(0))
    assert path.name == name + ".mp4" and decode(path)[0] == 1


def test_mp4_index_stays_at_the_front(tmp_path: Path) -> None:
    # The faststart pass reads the output back; PyAV only holds an open file, never its name.
    path = tmp_path / "fast.mp4"
    with VideoEncoder(path, W, H, 16, encoder="software") as enc:
        for i in range(8):
            enc.write(frame(i))
    data = path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")


def test_a_retried_encode_clears_what_a_killed_attempt_left(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    (tmp_path / ".tmp").mkdir()
    leftover = tmp_path / ".tmp" / temp_name(path.name)
    leftover.write_bytes(b"\0" * 48)  # nobody holds its lock: its writer is dead
    then = time.time() - 10
    os.utime(leftover, (then, then))
    with VideoEncoder(path, W, H, 16, encoder="software") as enc:
        assert not leftover.exists()
        enc.write(frame(0))
    assert not temporaries(path) and decode(path)[0] == 1

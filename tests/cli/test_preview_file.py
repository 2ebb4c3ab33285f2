"""`submit --wait --preview PATH`: the newest preview at PATH, an animated WebP that is always whole."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from artifex_agent.cli.main import build_parser, main
from artifex_agent.cli.preview_file import PreviewFile
from artifex_agent.cli.submit import PREVIEW_EVERY, preview_every
from artifex_agent.engines.previews import cell_size, encode
from artifex_agent.errors import ExitCode


def agent_preview(shades: list[int], width: int = 1280, height: int = 720, webp: bool = True) -> bytes:
    """A preview as an agent encodes it (engines/previews.py): one flat frame per shade, on its grid."""
    frames = np.stack([np.full((9, 16, 3), (shade, 255 - shade, 128), np.uint8) for shade in shades])
    return encode(frames, cell_size(width, height, len(shades)), webp=webp)


def read(path: Path) -> tuple[list[tuple[int, int, int]], tuple[int, int]]:
    """Each frame's centre colour, and the frame size."""
    with Image.open(path) as image:
        assert image.format == "WEBP"
        colours = []
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            rgb = image.convert("RGB")
            colours.append(rgb.getpixel((rgb.width // 2, rgb.height // 2)))
        return colours, image.size  # type: ignore[return-value]


def near(colours: list[tuple[int, int, int]], shades: list[int]) -> bool:
    """The frames show these shades in this order (give or take the lossy encodes)."""
    return len(colours) == len(shades) and all(abs(c[0] - s) < 25 for c, s in zip(colours, shades, strict=True))


def test_each_preview_replaces_the_file_whole_as_an_animated_webp_of_its_frames(tmp_path: Path) -> None:
    target = tmp_path / "preview.webp"
    file = PreviewFile(target, 1280, 720, 81)
    assert file.update(agent_preview([20, 90, 160, 230]), step=5)
    colours, size = read(target)
    assert size == (128, 72) and near(colours, [20, 90, 160, 230])  # the grid's cells, in order
    # A reader that opened the old picture keeps reading all of it: the new one arrives by rename.
    with open(target, "rb") as reader:
        old_inode = os.fstat(reader.fileno()).st_ino
        assert file.update(agent_preview([200, 40, 120]), step=10)
        with Image.open(reader) as old:
            assert getattr(old, "n_frames", 1) == 4
    assert os.stat(target).st_ino != old_inode
    colours, _ = read(target)
    assert near(colours, [200, 40, 120])  # three frames: the grid's black cell is no frame
    assert file.step == 10 and file.written == 2
    # Two frames side by side, and a JPEG (an agent without WebP) are cut the same way.
    assert file.update(agent_preview([60, 180]), step=12) and len(read(target)[0]) == 2
    assert file.update(agent_preview([60, 180, 10, 250], webp=False), step=15) and len(read(target)[0]) == 4
    # A preview that is already a loop keeps its own frames.
    loop = [Image.new("RGB", (32, 18), (shade, 0, 0)) for shade in (30, 130, 230)]
    animated = tmp_path / "loop.webp"
    loop[0].save(animated, "WEBP", save_all=True, append_images=loop[1:], duration=100, loop=0, lossless=True)
    assert file.update(animated.read_bytes(), step=16) and near(read(target)[0], [30, 130, 230])
    animated.unlink()
    before = target.read_bytes()
    assert not file.update(b"not a picture", step=20)
    assert target.read_bytes() == before and file.written == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preview.webp"]  # no temporary left behind


def test_preview_flags_set_the_cadence_and_are_checked_before_submitting(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    parse = build_parser().parse_args
    assert preview_every(parse(["submit", "a fox"])) == 0
    assert preview_every(parse(["submit", "a fox", "--wait", "--preview", "p.webp"])) == PREVIEW_EVERY
    assert preview_every(parse(["submit", "a fox", "--wait", "--preview", "p.webp", "--preview-every", "2"])) == 2
    assert preview_every(parse(["submit", "a fox", "--preview-every", "3"])) == 3
    config = tmp_path / "cluster.toml"
    config.write_text('[coordinator]\nlisten = "127.0.0.1:1"\n[agents.a]\nlisten = "127.0.0.1:2"\n')
    for extra, said in ((["--preview", str(tmp_path / "p.webp")], "--preview needs --wait"),
                        (["--wait", "--preview", str(tmp_path / "no" / "p.webp")], "does not exist")):
        assert main(["submit", "--config", str(config), "a fox", *extra]) == ExitCode.FAILURE
        assert said in capsys.readouterr().err

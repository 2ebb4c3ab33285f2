"""The preview grid's layout, shared by the agent that tiles it and the CLI that cuts it, without torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from artifex_agent import preview_grid as grid


def test_frames_fill_a_grid_two_wide_in_reading_order() -> None:
    assert [grid.grid_shape(n) for n in range(1, 5)] == [(1, 1), (2, 1), (2, 2), (2, 2)]
    assert [grid.frames_shown(n) for n in (1, 2, 3, 4, 21)] == [1, 2, 3, 4, 4]
    assert grid.cells(2, 2, (10, 6)) == [(0, 0, 10, 6), (10, 0, 20, 6), (0, 6, 10, 12), (10, 6, 20, 12)]
    assert grid.cells(1, 1, (7, 3)) == [(0, 0, 7, 3)]


def test_the_grid_keeps_the_videos_aspect_at_most_256_wide() -> None:
    assert grid.cell_size(1280, 720, 4) == (128, 72)
    assert grid.preview_size(1280, 720, 4) == (256, 144)
    assert grid.preview_size(832, 480, 4) == (256, 148)
    assert grid.preview_size(832, 480, 2) == (256, 74)  # two side by side: one row
    assert grid.preview_size(64, 32, 1) == (64, 32)  # narrower than 256: the video's own width
    assert grid.preview_size(64, 32, 2) == (64, 16)
    assert grid.preview_size(1280, 720, 4, max_width=128) == (128, 72)
    assert grid.cell_size(4, 2000, 2) == (2, 1000) and grid.cell_size(2000, 4, 2) == (128, 1)  # never 0 wide


@pytest.mark.parametrize(("width", "height"), [(1280, 720), (832, 480), (480, 832), (32, 32), (64, 32), (96, 64),
                                               (16, 1280), (1280, 16)])
@pytest.mark.parametrize("shown", [1, 2, 3, 4])
def test_the_cli_reads_back_the_grid_an_agent_laid_out(width: int, height: int, shown: int) -> None:
    columns, rows = grid.grid_shape(shown)
    image_w, image_h = grid.preview_size(width, height, shown)
    clip_frames = 1 if shown == 1 else 4 * shown + 1  # a clip of one frame shows one; longer ones at least two
    assert grid.shape_of(image_w, image_h, width / height, clip_frames) == (columns, rows)
    # Cut by the image's size, the cells are the ones the agent pasted the frames into.
    cell = grid.cell_size(width, height, shown)
    assert grid.cells(columns, rows, (image_w // columns, image_h // rows)) == grid.cells(columns, rows, cell)
    # Only a grid of three leaves a cell empty: the 2x2's fourth.
    assert grid.may_end_empty(columns, rows) == (shown >= 3)


def test_a_square_grid_is_one_frame_only_for_a_clip_of_one_frame() -> None:
    assert grid.shape_of(64, 64, 1.0, 1) == (1, 1)
    assert grid.shape_of(64, 64, 1.0, 81) == (2, 2)
    assert grid.shape_of(128, 64, 1.0, 81) == (2, 1)
    assert grid.shape_of(128, 64, 1.0, 1) == (2, 1)  # an image two cells wide is two cells, whatever the clip


def test_the_cli_preview_file_imports_without_torch() -> None:
    code = ("import sys, artifex_agent.cli.preview_file, artifex_agent.preview_grid; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"

"""The live preview's grid: how many frames, on how many columns and rows, each cell where and how large.

One home for the layout an agent tiles its preview frames on (engines/previews.py) and the CLI cuts
them back out of (cli/preview_file.py). Plain arithmetic, no torch: the CLI must stay light to import.
"""

from __future__ import annotations

import math

PREVIEW_WIDTH = 256  # the widest preview sent (pixels); narrower videos keep their own width
PREVIEW_FRAMES = 4  # frames spread over the clip
COLUMNS = 2  # of the grid they are laid out on

Box = tuple[int, int, int, int]  # left, top, right, bottom (PIL's crop box)


def grid_shape(frames: int) -> tuple[int, int]:
    """(columns, rows) of the grid that shows `frames` frames."""
    columns = min(frames, COLUMNS)
    return columns, -(-frames // columns)


def cell_size(width: int, height: int, frames: int, max_width: int = PREVIEW_WIDTH) -> tuple[int, int]:
    """One frame's (width, height) in the preview: the video's aspect ratio, the grid at most `max_width` wide."""
    columns, _ = grid_shape(frames)
    w = max(1, min(width, max_width) // columns)
    return w, max(1, round(height * w / width))


def preview_size(width: int, height: int, frames: int, max_width: int = PREVIEW_WIDTH) -> tuple[int, int]:
    """The preview image's (width, height) for a video and the number of frames it shows."""
    columns, rows = grid_shape(frames)
    w, h = cell_size(width, height, frames, max_width)
    return columns * w, rows * h


def frames_shown(latent_frames: int) -> int:
    """How many frames a preview shows of a clip with this many latent frames."""
    return min(PREVIEW_FRAMES, latent_frames)


def cells(columns: int, rows: int, cell: tuple[int, int]) -> list[Box]:
    """Every cell's box on a `columns` x `rows` grid of `cell`-sized cells, in reading order (frame i in box i)."""
    w, h = cell
    return [(c * w, r * h, (c + 1) * w, (r + 1) * h) for r in range(rows) for c in range(columns)]


def shape_of(width: int, height: int, aspect: float, clip_frames: int) -> tuple[int, int]:
    """(columns, rows) of a preview image `width` x `height` of a clip with this aspect (width / height).

    Each cell has the clip's aspect, so the grid whose columns / rows ratio is nearest the image's
    (relative to the clip's) is the one. A square grid of one cell and of 2x2 look alike: a clip of
    more than one frame gets the 2x2 (a grid of three frames has a black fourth cell), one frame one cell.
    """
    ratio = width / height / aspect
    more = clip_frames > 1
    shapes = {grid_shape(n) for n in range(1, PREVIEW_FRAMES + 1)}
    return min(shapes, key=lambda s: (abs(math.log(ratio * s[1] / s[0])), -s[0] * s[1] if more else s[0] * s[1]))


def may_end_empty(columns: int, rows: int) -> bool:
    """Whether the grid's last cell can be empty (black): one frame fewer would be laid out on the same grid."""
    return columns * rows > 1 and grid_shape(columns * rows - 1) == (columns, rows)

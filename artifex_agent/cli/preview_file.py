"""`submit --wait --preview PATH`: the job's newest live preview kept at PATH as an animated WebP.

An agent sends a preview as one small image: up to four frames spread over the clip, in reading order
on a grid two cells wide (preview_grid.py; a black cell fills a grid of three). Here the cells
become the frames of a loop. Each new preview replaces the file whole: written beside it under a
temporary name, then renamed over it, so a viewer that reloads the file never reads half a picture.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

from PIL import Image, ImageStat, UnidentifiedImageError

from artifex_agent.newfile import replacing
from artifex_agent.preview_grid import cells, may_end_empty, shape_of

logger = logging.getLogger(__name__)

# How long each frame of the loop shows.
FRAME_MS = 250
# An empty cell (a grid of three's fourth) is black, give or take what the lossy encode bleeds into it.
BLACK_MEAN = 8.0


def frames_of(data: bytes, aspect: float, clip_frames: int) -> list[Image.Image]:
    """The frames a preview shows, as RGB images: an animated image's own, else the cells of its grid.

    `aspect` (width / height) and `clip_frames` are the clip's: each cell has the clip's aspect, so a
    grid twice as wide as a cell is two frames side by side, one as wide is 2x2 (or one frame, for a
    clip of one frame).
    """
    with Image.open(io.BytesIO(data)) as image:
        count = int(getattr(image, "n_frames", 1))
        if count > 1:
            frames = []
            for index in range(count):
                image.seek(index)
                frames.append(image.convert("RGB"))
            return frames
        grid = image.convert("RGB")
    width, height = grid.size
    columns, rows = shape_of(width, height, aspect, clip_frames)
    frames = [grid.crop(box) for box in cells(columns, rows, (width // columns, height // rows))]
    if may_end_empty(columns, rows) and max(ImageStat.Stat(frames[-1]).mean) < BLACK_MEAN:
        frames.pop()
    return frames


class PreviewFile:
    """The WebP at `path`, rewritten with each preview of a clip `width` x `height` of `frames` frames."""

    def __init__(self, path: Path, width: int, height: int, frames: int) -> None:
        self.path = path
        self.aspect = width / height
        self.clip_frames = frames
        self.written = 0
        self.step = 0

    def update(self, data: bytes, step: int = 0) -> bool:
        """Replace the file with this preview's frames; False (the file unchanged) when it does not decode."""
        try:
            frames = frames_of(data, self.aspect, self.clip_frames)
        except (UnidentifiedImageError, OSError, ValueError, ZeroDivisionError) as exc:
            logger.warning("a preview that does not decode was skipped: %s", exc)
            return False
        # The same folder (a rename within one filesystem is atomic), a fresh name created exclusively.
        with replacing(self.path) as f:
            frames[0].save(f, "WEBP", save_all=True, append_images=frames[1:], duration=FRAME_MS, loop=0,
                           quality=80)
        self.written += 1
        self.step = step
        return True

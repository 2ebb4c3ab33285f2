"""One generation's output and its cut into one part per delivery (per job of a batch).

Cutting happens here and only here: a batch's output is (clips, ...) and job i takes the
next `clips` of them, as views, so no part is a copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from artifex_agent.errors import RequestError
from artifex_agent.transport.clips import ClipStream


@dataclass(frozen=True)
class Payload:
    """uint8 RGB frames (clips, F, H, W, 3) or latents (clips, C, T, h, w), with what a stream header needs."""

    fps: float
    model: str
    width: int
    height: int
    rgb: np.ndarray | None = None
    latents: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        data = self.rgb if self.rgb is not None else self.latents
        assert data is not None
        return data

    @property
    def clips(self) -> int:
        return int(self.array.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.array.nbytes)

    def part(self, start: int, count: int) -> Payload:
        """Clips start..start+count (a view)."""
        end = start + count
        if self.rgb is not None:
            return Payload(self.fps, self.model, self.width, self.height, rgb=self.rgb[start:end])
        return Payload(self.fps, self.model, self.width, self.height, latents=self.array[start:end])

    def stream(self, chunk_bytes: int = 0) -> ClipStream:
        """This payload as a frame stream (header, chunks, trailer)."""
        return ClipStream(fps=self.fps, model=self.model, latents=self.latents, rgb=self.rgb, width=self.width,
                          height=self.height, chunk_bytes=chunk_bytes)


def cut(payload: Payload, clips: Sequence[int]) -> list[Payload]:
    """One part per delivery, delivery i taking the next clips[i] clips; RequestError when they do not add up."""
    if any(n < 1 for n in clips):
        raise RequestError("every delivery takes at least one clip")
    if sum(clips) != payload.clips:
        raise RequestError(f"the deliveries take {sum(clips)} clips; the generation made {payload.clips}")
    parts, start = [], 0
    for n in clips:
        parts.append(payload.part(start, n))
        start += n
    return parts

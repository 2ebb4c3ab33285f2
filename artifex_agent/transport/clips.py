"""A job's output as a frame stream: the same messages whether Generate or a split job made it.

Latents go one clip per stream frame, RGB frame by frame, so a copy (if any) is one frame,
never the clip.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np

from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.transport import frames, wire


class ClipStream:
    """Header, chunks and trailer for latents (clips, C, T, h, w) or uint8 RGB (clips, F, H, W, 3)."""

    def __init__(self, *, fps: float, model: str, latents: np.ndarray | None = None, rgb: np.ndarray | None = None,
                 width: int = 0, height: int = 0, chunk_bytes: int = 0) -> None:
        if latents is not None:
            n_clips = latents.shape[0]
            # width/height: the size the latents decode to, for a receiver that decodes them.
            header = frames.latent_header(tuple(latents.shape[1:]), latents.dtype.name, n_clips, fps,
                                          clip_count=n_clips, model=model, width=width, height=height)
            self._frames: Callable[[], Iterator[np.ndarray]] = lambda: (
                np.ascontiguousarray(latents[i]) for i in range(n_clips))
        elif rgb is not None:
            n_clips, n_frames, h, w, _ = rgb.shape
            header = frames.rgb_header(w, h, n_clips * n_frames, fps, clip_count=n_clips, model=model)
            self._frames = lambda: (np.ascontiguousarray(rgb[c, f]) for c in range(n_clips) for f in range(n_frames))
        else:
            raise ValueError("a clip stream needs latents or rgb")
        self.header = header
        self.sender = frames.FrameSender(header, chunk_bytes)

    def messages(self, started: float, on_frame: Callable[[int], None] | None = None) -> Iterator[bytes]:
        """A "stream" progress event (elapsed since `started`), then the stream; `on_frame(bytes)` after each frame."""
        yield wire.encode_progress(pb.Progress(current_stage=pb.STAGE_STREAM, total=self.header.frame_count,
                                               elapsed_s=time.monotonic() - started))
        yield self.sender.header_message()
        for frame in self._frames():
            sent = self.sender.bytes
            yield from self.sender.frame_messages(frame)
            if on_frame is not None:
                on_frame(self.sender.bytes - sent)
        yield self.sender.trailer_message()

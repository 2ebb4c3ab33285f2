"""ClipStream: a job's output, latents or RGB, as the checked frame stream a receiver reassembles bit for bit."""

from __future__ import annotations

import numpy as np

from artifex_agent.transport import frames, wire
from artifex_agent.transport.clips import ClipStream


def _receive(messages: list[bytes]) -> tuple[list[str], frames.FrameReceiver, list[bytes]]:
    """The kinds of the messages, and the frames a receiver rebuilt from them (checked against header and trailer)."""
    kinds, got = [], []
    rx = frames.FrameReceiver()
    for raw in messages:
        m = wire.decode(raw, first_field="progress")
        kinds.append(m.kind)
        if m.header is not None:
            rx.on_header(m.header)
        elif m.payload is not None:
            got += [bytes(view) for view in rx.on_chunk(m.payload)]
        elif m.trailer is not None:
            rx.on_trailer(m.trailer)
    rx.finish()
    return kinds, rx, got


def test_rgb_clips_go_frame_by_frame_with_the_stream_progress_first() -> None:
    rgb = np.random.default_rng(1).integers(0, 255, (2, 3, 8, 16, 3), dtype=np.uint8)
    clip = ClipStream(fps=16.0, model="m", rgb=rgb, chunk_bytes=100)
    sizes: list[int] = []
    kinds, rx, got = _receive(list(clip.messages(0.0, sizes.append)))
    assert kinds[:2] == ["progress", "header"] and kinds[-1] == "trailer"
    assert rx.header is not None and (rx.header.width, rx.header.height, rx.header.clip_count) == (16, 8, 2)
    assert got == [rgb[c, f].tobytes() for c in range(2) for f in range(3)]
    assert sizes == [8 * 16 * 3] * 6


def test_latents_go_one_clip_per_frame_and_name_the_size_they_decode_to() -> None:
    latents = np.random.default_rng(2).standard_normal((2, 4, 3, 2, 2)).astype(np.float32)
    clip = ClipStream(fps=24.0, model="m", latents=latents, width=16, height=16)
    kinds, rx, got = _receive(list(clip.messages(0.0)))
    header = rx.header
    assert header is not None and header.kind == frames.LATENT and header.dtype == "float32"
    assert (list(header.shape), header.frame_count, header.width, header.model) == ([4, 3, 2, 2], 2, 16, "m")
    assert got == [latents[0].tobytes(), latents[1].tobytes()]
    assert (clip.sender.frames, clip.sender.bytes) == (2, latents.nbytes)

"""Bulk streams: a header, frames cut into raw chunks, a trailer with count and checksum.

The sender and the receiver each hold at most one frame at a time; the receiver checks
every frame's size against the header and the trailer's count, byte total and checksum
against what arrived, and fails loudly on any difference. What a receiver holds follows the
bytes that arrived, never the sizes a header announces: a peer that announces an 8K frame and
sends one byte costs one byte.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import xxhash

from artifex_agent import PROTOCOL_VERSION
from artifex_agent.errors import RequestError, StreamError
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.transport import options, wire

RGB24 = pb.PAYLOAD_KIND_RGB24
LATENT = pb.PAYLOAD_KIND_LATENT

# Latent dtypes a receiver accepts, with their sizes (bfloat16 has no numpy dtype).
LATENT_DTYPES = {"float32": 4, "float16": 2, "bfloat16": 2}
# The encoders take 0 < fps <= 1000 (engines/encode.py); 0 in a header means "not said".
MAX_FPS = 1000.0


class Budget(Protocol):
    """Where a receiver charges the bytes it holds (services/admission.Ticket); raises when it is full."""

    def hold(self, nbytes: int) -> None: ...


def check_fps(fps: float, what: str = "fps") -> None:
    """Refuse NaN, infinite, negative or absurd frame rates (0 means unset)."""
    if not (math.isfinite(fps) and 0 <= fps <= MAX_FPS):
        raise RequestError(f"{what} must be within 0..{MAX_FPS:.0f} (got {fps})")


def rgb_header(width: int, height: int, frame_count: int, fps: float, *, clip_count: int = 1,
               model: str = "") -> pb.StreamHeader:
    """Header for uint8 RGB frames."""
    return pb.StreamHeader(kind=RGB24, width=width, height=height, channels=3, frame_count=frame_count,
                           frame_bytes=width * height * 3, fps=fps, dtype="uint8", shape=[height, width, 3],
                           clip_count=clip_count, model=model, protocol_version=PROTOCOL_VERSION)


def latent_header(shape: tuple[int, ...], dtype: str, frame_count: int, fps: float, *, clip_count: int = 1,
                  model: str = "", width: int = 0, height: int = 0) -> pb.StreamHeader:
    """Header for latent tensors; one "frame" is one tensor of `shape`."""
    size = LATENT_DTYPES[dtype] * math.prod(shape)
    return pb.StreamHeader(kind=LATENT, width=width, height=height, frame_count=frame_count, frame_bytes=size,
                           fps=fps, dtype=dtype, shape=list(shape), clip_count=clip_count, model=model,
                           protocol_version=PROTOCOL_VERSION)


def check_header(h: pb.StreamHeader, *, max_frame_bytes: int = options.MAX_FRAME_BYTES,
                 max_frames: int = options.MAX_FRAME_COUNT) -> None:
    """Refuse a header that is inconsistent or over the limits."""
    if h.protocol_version and h.protocol_version != PROTOCOL_VERSION:
        raise StreamError(f"peer speaks protocol {h.protocol_version}, this agent speaks {PROTOCOL_VERSION}")
    check_fps(h.fps, "header fps")
    if h.frame_count < 1:
        raise StreamError("header announces no frames")
    if h.frame_count > max_frames:
        raise StreamError(f"header announces {h.frame_count} frames; the limit is {max_frames}")
    if h.frame_bytes < 1 or h.frame_bytes > max_frame_bytes:
        raise StreamError(f"frame size {h.frame_bytes} bytes is outside 1..{max_frame_bytes}")
    clips = h.clip_count or 1
    if h.frame_count % clips:
        raise StreamError(f"{h.frame_count} frames do not split evenly into {clips} clips")
    if h.kind == RGB24:
        if h.channels != 3 or h.width < 1 or h.height < 1:
            raise StreamError("RGB24 header needs width, height and channels=3")
        if h.frame_bytes != h.width * h.height * 3:
            raise StreamError(f"frame_bytes {h.frame_bytes} does not match {h.width}x{h.height} RGB")
    elif h.kind == LATENT:
        if h.dtype not in LATENT_DTYPES:
            raise StreamError(f"latent dtype {h.dtype!r} is not one of {', '.join(LATENT_DTYPES)}")
        if not h.shape or h.frame_bytes != LATENT_DTYPES[h.dtype] * math.prod(h.shape):
            raise StreamError("latent shape and dtype do not match frame_bytes")
    else:
        raise StreamError("header has no payload kind")


class FrameSender:
    """Turns frames into wire messages: header, chunks, trailer."""

    def __init__(self, header: pb.StreamHeader, chunk_bytes: int = 0) -> None:
        check_header(header)
        self.header = header
        self.chunk_bytes = chunk_bytes or options.DEFAULT_CHUNK_BYTES
        self.frames = 0
        self.bytes = 0
        self._hash = xxhash.xxh3_64()

    def header_message(self) -> bytes:
        return wire.encode_header(self.header)

    def frame_messages(self, frame: Any) -> Iterator[bytes]:
        """Chunk messages for one frame (bytes, or an array whose bytes are the frame)."""
        data = frame.data.cast("B") if isinstance(frame, np.ndarray) else memoryview(frame).cast("B")
        if data.nbytes != self.header.frame_bytes:
            raise StreamError(f"frame {self.frames} has {data.nbytes} bytes, the header says {self.header.frame_bytes}")
        if self.frames >= self.header.frame_count:
            raise StreamError(f"more frames than the {self.header.frame_count} announced")
        self._hash.update(data)
        self.frames += 1
        self.bytes += data.nbytes
        for start in range(0, data.nbytes, self.chunk_bytes):
            yield wire.encode_chunk(data[start:start + self.chunk_bytes])

    def trailer_message(self) -> bytes:
        if self.frames != self.header.frame_count:
            raise StreamError(f"sent {self.frames} frames, the header announced {self.header.frame_count}")
        return wire.encode_trailer(self.trailer())

    def trailer(self) -> pb.StreamTrailer:
        return pb.StreamTrailer(frame_count=self.frames, total_bytes=self.bytes, checksum=self._hash.hexdigest())


class FrameReceiver:
    """Reassembles frames from chunks and checks them against the header and trailer.

    With a `budget`, every chunk is charged to it as it arrives (before it is kept); the
    frames returned stay charged, and whoever consumes them releases them.
    """

    def __init__(self, *, max_frame_bytes: int = options.MAX_FRAME_BYTES,
                 max_frames: int = options.MAX_FRAME_COUNT, budget: Budget | None = None) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.max_frames = max_frames
        self.budget = budget
        self.header: pb.StreamHeader | None = None
        self.frames = 0
        self.bytes = 0
        self.done = False
        self._hash = xxhash.xxh3_64()
        # The frame in progress, as long as the bytes that arrived (not as the header announced).
        self._buf = bytearray()
        self._fill = 0

    def on_header(self, header: pb.StreamHeader) -> None:
        if self.header is not None:
            raise StreamError("a second header arrived in the same stream")
        check_header(header, max_frame_bytes=self.max_frame_bytes, max_frames=self.max_frames)
        self.header = header

    def on_chunk(self, view: memoryview) -> list[memoryview]:
        """Feed one chunk; returns the frames it completed (views valid until the next call)."""
        h = self.header
        if h is None:
            raise StreamError("frame data arrived before the stream header")
        if self.done:
            raise StreamError("frame data arrived after the trailer")
        if self.bytes + view.nbytes > h.frame_count * h.frame_bytes:
            raise StreamError(f"more data than the {h.frame_count} frames of {h.frame_bytes} bytes announced")
        size = h.frame_bytes
        # Senders never let a chunk span two frames, so a chunk that overflows the frame
        # in progress means a frame of the wrong size.
        if self._fill + view.nbytes > size:
            raise StreamError(f"frame {self.frames} is larger than the {size} bytes the header announced")
        if self.budget is not None:
            self.budget.hold(view.nbytes)
        self._hash.update(view)
        self.bytes += view.nbytes
        if self._fill == 0 and view.nbytes == size:
            self.frames += 1  # the common case: one frame per message, no copy
            return [view]
        # Grown by what arrives: a buffer of the announced size, allocated on the first byte, let
        # one byte pin a whole frame. (Keeping the chunks' views instead would cost a few hundred
        # bytes of objects per chunk, however small the chunk.)
        self._buf += view
        self._fill += view.nbytes
        if self._fill < size:
            return []
        frame = bytes(self._buf)
        self._buf = bytearray()
        self._fill = 0
        self.frames += 1
        return [memoryview(frame)]

    def on_trailer(self, trailer: pb.StreamTrailer) -> None:
        h = self.header
        if h is None:
            raise StreamError("trailer arrived before the stream header")
        if self.done:
            raise StreamError("a second trailer arrived in the same stream")
        if self._fill:
            raise StreamError(f"stream ended inside frame {self.frames}: {self._fill} of {h.frame_bytes} bytes")
        if trailer.frame_count != self.frames or self.frames != h.frame_count:
            raise StreamError(f"received {self.frames} frames; header said {h.frame_count}, "
                              f"trailer says {trailer.frame_count}")
        if trailer.total_bytes != self.bytes:
            raise StreamError(f"received {self.bytes} bytes, trailer says {trailer.total_bytes}")
        if trailer.checksum != self._hash.hexdigest():
            raise StreamError("checksum mismatch: the frames were corrupted on the way")
        self.done = True

    def finish(self) -> None:
        """Call at end of stream: a stream without its trailer is truncated."""
        if not self.done:
            got = f"{self.frames} of {self.header.frame_count} frames" if self.header else "no header"
            raise StreamError(f"stream ended before its trailer ({got}): truncated")


def as_rgb(view: memoryview, header: pb.StreamHeader) -> np.ndarray:
    """A zero-copy (H, W, 3) uint8 view of one RGB frame."""
    return np.frombuffer(view, dtype=np.uint8).reshape(header.height, header.width, 3)

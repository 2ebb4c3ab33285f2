"""Frame streams: header, chunks and trailer are checked on the receiving side."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from artifex_agent.errors import MalformedMessage, RequestError, StreamError
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.transport import frames, wire


def _clip(n: int = 5, h: int = 8, w: int = 6) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, size=(n, h, w, 3), dtype=np.uint8)


def _send(clip: np.ndarray, chunk_bytes: int = 0) -> list[bytes]:
    n, h, w, _ = clip.shape
    sender = frames.FrameSender(frames.rgb_header(w, h, n, 16.0), chunk_bytes)
    out = [sender.header_message()]
    for f in clip:
        out += list(sender.frame_messages(f))
    out.append(sender.trailer_message())
    return out


def _receive(messages: list[bytes]) -> np.ndarray:
    rx = frames.FrameReceiver()
    got = []
    for raw in messages:
        msg = wire.decode(raw, first_field="progress")
        if msg.kind == "header":
            rx.on_header(msg.header)
        elif msg.kind == "chunk":
            got += [frames.as_rgb(v, rx.header).copy() for v in rx.on_chunk(msg.payload)]
        elif msg.kind == "trailer":
            rx.on_trailer(msg.trailer)
    rx.finish()
    return np.stack(got)


@pytest.mark.parametrize("chunk_bytes", [0, 7, 144, 1000])
def test_frames_round_trip_whatever_the_chunk_size(chunk_bytes: int) -> None:
    clip = _clip()
    assert np.array_equal(_receive(_send(clip, chunk_bytes)), clip)


def test_truncated_stream_is_rejected() -> None:
    messages = _send(_clip())[:-2]  # last frame and trailer lost
    with pytest.raises(StreamError, match="truncated"):
        _receive(messages)


def test_checksum_mismatch_is_rejected() -> None:
    messages = _send(_clip())
    corrupt = bytearray(messages[2])
    corrupt[-1] ^= 0xFF
    messages[2] = bytes(corrupt)
    with pytest.raises(StreamError, match="checksum"):
        _receive(messages)


def test_extra_frames_beyond_the_header_are_rejected() -> None:
    messages = _send(_clip(n=2))
    messages.insert(-1, messages[1])
    with pytest.raises(StreamError, match="more data"):
        _receive(messages)


def test_wrong_frame_size_is_refused_by_the_sender() -> None:
    sender = frames.FrameSender(frames.rgb_header(6, 8, 2, 16.0))
    with pytest.raises(StreamError, match="bytes"):
        list(sender.frame_messages(np.zeros((8, 5, 3), np.uint8)))


def test_trailer_count_that_disagrees_is_rejected() -> None:
    messages = _send(_clip(n=3))
    t = pb.GenerateEvent.FromString(messages[-1]).trailer
    t.frame_count = 4
    messages[-1] = wire.encode_trailer(t)
    with pytest.raises(StreamError, match="frames"):
        _receive(messages)


@pytest.mark.parametrize("header, match", [
    (pb.StreamHeader(kind=frames.RGB24, width=4, height=4, channels=3, frame_count=0, frame_bytes=48), "no frames"),
    (pb.StreamHeader(kind=frames.RGB24, width=4, height=4, channels=3, frame_count=1, frame_bytes=47), "match"),
    (pb.StreamHeader(kind=frames.RGB24, width=1 << 15, height=1 << 15, channels=3, frame_count=1,
                     frame_bytes=3 << 30), "outside"),
    (pb.StreamHeader(kind=frames.RGB24, width=4, height=4, channels=3, frame_count=1, frame_bytes=48,
                     protocol_version=99), "protocol"),
    (pb.StreamHeader(kind=frames.LATENT, frame_count=1, frame_bytes=16, dtype="int8", shape=[16]), "dtype"),
    (pb.StreamHeader(frame_count=1, frame_bytes=16), "kind"),
])
def test_bad_headers_are_refused(header: pb.StreamHeader, match: str) -> None:
    with pytest.raises(StreamError, match=match):
        frames.check_header(header)


def test_garbage_message_is_a_stream_error() -> None:
    with pytest.raises(StreamError):
        wire.decode(b"\x1a\xff\xff\xff", first_field="spec")
    with pytest.raises(StreamError):
        wire.decode(b"\x0a\x05ab", first_field="spec")


def test_a_frame_of_the_wrong_size_is_rejected() -> None:
    rx = frames.FrameReceiver()
    rx.on_header(frames.rgb_header(6, 8, 3, 16.0))
    rx.on_chunk(memoryview(bytes(100)))  # a short first frame...
    with pytest.raises(StreamError, match="frame 0 is larger"):
        rx.on_chunk(memoryview(bytes(144)))  # ...shows when the next frame's data overflows it


def test_garbage_is_a_malformed_message_without_parser_internals() -> None:
    for raw in (b"\x1a\xff\xff\xff", b"\x0a\x05ab", b"\xff\xff\xff\xff"):
        with pytest.raises(MalformedMessage, match="^malformed message") as err:
            wire.decode(raw, first_field="spec")
        assert "DecodeError" not in str(err.value)


class _Budget:
    def __init__(self) -> None:
        self.held = 0

    def hold(self, nbytes: int) -> None:
        self.held += nbytes


def test_one_byte_of_a_huge_frame_holds_one_byte() -> None:
    """Issue 10: the whole announced frame (99.5 MB here) was allocated on its first byte."""
    budget = _Budget()
    rx = frames.FrameReceiver(budget=budget)
    rx.on_header(frames.rgb_header(7680, 4320, 1, 16.0))
    tracemalloc.start()
    try:
        rx.on_chunk(memoryview(b"\x00"))
        _, one = tracemalloc.get_traced_memory()
        for _ in range(20_000):  # and tiny chunks cost what they carry, not an object each
            rx.on_chunk(memoryview(b"\x00"))
        _, many = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert one < 1 << 20 and many < 1 << 20 and budget.held == 20_001


@pytest.mark.parametrize("chunk_bytes", [7, 100, 143])
def test_frames_cut_into_chunks_are_charged_as_they_arrive(chunk_bytes: int) -> None:
    clip = _clip(n=3)
    budget = _Budget()
    rx = frames.FrameReceiver(budget=budget)
    got = []
    for raw in _send(clip, chunk_bytes):
        msg = wire.decode(raw, first_field="progress")
        if msg.kind == "header":
            rx.on_header(msg.header)
        elif msg.kind == "chunk":
            got += [frames.as_rgb(v, rx.header).copy() for v in rx.on_chunk(msg.payload)]
            assert budget.held == rx.bytes
        elif msg.kind == "trailer":
            rx.on_trailer(msg.trailer)
    assert np.array_equal(np.stack(got), clip) and budget.held == clip.nbytes


def test_a_second_trailer_is_refused() -> None:
    messages = _send(_clip(n=2))
    with pytest.raises(StreamError, match="second trailer"):
        _receive([*messages, messages[-1]])


@pytest.mark.parametrize("fps", [math.nan, math.inf, -1.0, 1001.0])
def test_header_fps_must_be_a_plain_rate(fps: float) -> None:
    header = frames.rgb_header(4, 4, 1, 16.0)
    header.fps = fps
    with pytest.raises(RequestError, match="header fps"):
        frames.check_header(header)
    header.fps = 0.0  # unset: the spec or the default decides
    frames.check_header(header)

"""Frame streams: header, chunks and trailer are checked on the receiving side."""

from __future__ import annotations

import numpy as np
import pytest

from artifex_agent.errors import StreamError
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


def test_hand_written_chunk_is_the_protobuf_encoding() -> None:
    data = bytes(range(256)) * 700
    assert wire.encode_chunk(data) == pb.GenerateEvent(chunk=data).SerializeToString()
    assert wire.encode_chunk(data) == pb.PostProcessRequest(chunk=data).SerializeToString()
    assert wire.encode_bandwidth_chunk(data) == pb.BandwidthChunk(data=data).SerializeToString()
    decoded = wire.decode(pb.GenerateEvent(chunk=data).SerializeToString(), first_field="progress")
    assert decoded.kind == "chunk" and bytes(decoded.payload) == data


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

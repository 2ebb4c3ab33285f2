"""Hand-written encoding of the bulk-stream messages, byte-identical to agent.proto.

GenerateEvent and PostProcessRequest share field numbers: 2 header, 3 chunk, 4 trailer.
A chunk message is one tag byte, a varint length and the raw payload, so writing it by
hand skips building a protobuf object around megabytes of frame data (measured here:
protobuf `bytes` fields cost about half the throughput of raw bytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from artifex_agent.errors import MalformedMessage
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb

CHUNK_FIELD = 3
_LEN_DELIMITED = 2
_CHUNK_TAG = (CHUNK_FIELD << 3) | _LEN_DELIMITED


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while pos < len(buf) and shift < 64:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
    raise MalformedMessage("malformed message: truncated length prefix")


def encode_chunk(data: bytes | bytearray | memoryview) -> bytes:
    """A GenerateEvent/PostProcessRequest whose `chunk` field holds `data`."""
    return b"".join((bytes((_CHUNK_TAG,)), _varint(len(data)), data))


def encode_bandwidth_chunk(data: bytes | bytearray | memoryview) -> bytes:
    """A BandwidthChunk (field 1 `data`), written by hand like encode_chunk."""
    return b"".join((bytes(((1 << 3) | _LEN_DELIMITED,)), _varint(len(data)), data))


def bandwidth_payload_size(raw: bytes) -> int:
    """Payload bytes in a raw BandwidthChunk message."""
    if not raw:
        return 0
    length, pos = _read_varint(raw, 1)
    return length


def encode_header(header: pb.StreamHeader) -> bytes:
    return pb.GenerateEvent(header=header).SerializeToString()


def encode_trailer(trailer: pb.StreamTrailer) -> bytes:
    return pb.GenerateEvent(trailer=trailer).SerializeToString()


def encode_progress(progress: pb.Progress) -> bytes:
    return pb.GenerateEvent(progress=progress).SerializeToString()


def encode_spec(spec: pb.PostSpec) -> bytes:
    return pb.PostProcessRequest(spec=spec).SerializeToString()


Kind = Literal["progress", "spec", "header", "chunk", "trailer"]


@dataclass(slots=True)
class Message:
    """One decoded stream message; `payload` is a zero-copy view for chunks."""

    kind: Kind
    payload: memoryview | None = None
    progress: pb.Progress | None = None
    spec: pb.PostSpec | None = None
    header: pb.StreamHeader | None = None
    trailer: pb.StreamTrailer | None = None


def decode(raw: bytes, *, first_field: Literal["progress", "spec"]) -> Message:
    """Decode a GenerateEvent (`first_field="progress"`) or PostProcessRequest ("spec")."""
    if raw[:1] == bytes((_CHUNK_TAG,)):
        length, pos = _read_varint(raw, 1)
        if pos + length != len(raw):
            raise MalformedMessage("malformed message: a chunk's length prefix does not match its message")
        return Message("chunk", payload=memoryview(raw)[pos:])
    try:
        if first_field == "progress":
            event = pb.GenerateEvent.FromString(raw)
            which = event.WhichOneof("event")
        else:
            event = pb.PostProcessRequest.FromString(raw)
            which = event.WhichOneof("message")
    except Exception:  # protobuf raises DecodeError, and others on garbage; its text helps no one
        raise MalformedMessage("malformed message: the message does not parse") from None
    if which is None:
        raise MalformedMessage("malformed message: an empty message in the stream")
    if which == "chunk":  # a conforming encoder that put the chunk after other fields
        return Message("chunk", payload=memoryview(event.chunk))
    return Message(which, **{which: getattr(event, which)})  # type: ignore[arg-type]

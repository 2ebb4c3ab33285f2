"""Hand-written encoding of the bulk-stream messages, byte-identical to agent.proto and split.proto.

A chunk message is one tag byte, a varint length and the raw payload, so writing it by
hand skips building a protobuf object around megabytes of frame data (measured here:
protobuf `bytes` fields cost about half the throughput of raw bytes). Every tag byte the
code writes or routes by is computed here, from the field numbers in the generated
descriptors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from google.protobuf.descriptor import FieldDescriptor

from artifex_agent.errors import MalformedMessage
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.proto.artifex.v1 import split_pb2 as spb

# Messages whose header, chunk and trailer relays forward byte for byte from one stream into
# another (a Generate stream into PostProcess, one agent's split stream into the other's).
RELAYED: tuple[Any, ...] = (pb.GenerateEvent, pb.PostProcessRequest, spb.DenoiseRequest, spb.DenoiseEvent,
                            spb.CfgRequest, spb.CfgEvent)
_LEN_DELIMITED = 2  # the protobuf wire type of bytes and message fields


def _tag(field: str, *messages: Any) -> int:
    """First byte of a message holding only `field`; refused unless it is one byte, the same in all `messages`."""
    fields = [m.DESCRIPTOR.fields_by_name[field] for m in messages]
    numbers = {f.number for f in fields}
    if len(numbers) != 1 or not 0 < min(numbers) < 16 or any(
            f.type not in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_BYTES) for f in fields):
        # Messages are routed by this byte without parsing: numbers that differ would misroute them.
        raise RuntimeError(f"field {field!r} must be one length-delimited field number below 16 in "
                           f"{', '.join(m.DESCRIPTOR.name for m in messages)}; the protos say {sorted(numbers)}")
    return (numbers.pop() << 3) | _LEN_DELIMITED


# Progress is parsed as a GenerateEvent whichever stream it came on (split/streams.py).
PROGRESS = _tag("progress", pb.GenerateEvent, spb.DenoiseEvent, spb.CfgEvent)
HEADER = _tag("header", pb.GenerateEvent, pb.PostProcessRequest, spb.DenoiseEvent, spb.CfgEvent)
CHUNK = _tag("chunk", *RELAYED)
TRAILER = _tag("trailer", *RELAYED)
HANDOFF = _tag("handoff", spb.DenoiseRequest, spb.DenoiseEvent)
NOISE = _tag("noise", spb.CfgRequest, spb.CfgEvent)
# A split agent's refusal, in band before its status (split/streams.py).
ERROR = _tag("error", spb.DenoiseEvent, spb.CfgEvent)
BANDWIDTH_DATA = _tag("data", pb.BandwidthChunk)
_CHUNK_BYTE = bytes((CHUNK,))
_BANDWIDTH_BYTE = bytes((BANDWIDTH_DATA,))


def is_chunk(raw: bytes) -> bool:
    """A chunk message of any RELAYED kind, told by its first byte without parsing."""
    return raw[:1] == _CHUNK_BYTE


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
    """A message of any RELAYED kind whose `chunk` field holds `data`."""
    return b"".join((_CHUNK_BYTE, _varint(len(data)), data))


def encode_bandwidth_chunk(data: bytes | bytearray | memoryview) -> bytes:
    """A BandwidthChunk (its `data` field), written by hand like encode_chunk."""
    return b"".join((_BANDWIDTH_BYTE, _varint(len(data)), data))


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
    if is_chunk(raw):
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

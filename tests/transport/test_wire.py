"""The hand-written wire: tags read from the protos, bytes identical to protobuf's own encoding."""

from __future__ import annotations

from typing import Any

import pytest

from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.proto.artifex.v1 import split_pb2 as spb
from artifex_agent.split import messages
from artifex_agent.transport import wire

# Across a varint's one-, two- and three-byte lengths.
SIZES = [0, 1, 127, 128, 16383, 16384, (1 << 21) + 5]
_SAMPLES: dict[str, Any] = {
    "progress": pb.Progress(current_stage=pb.STAGE_DENOISE, step=3, total=9), "header": pb.StreamHeader(frame_count=2),
    "trailer": pb.StreamTrailer(frame_count=2, checksum="ab"), "handoff": spb.HandoffHeader(next_step=4),
    "noise": spb.NoiseHeader(step=4), "data": b"xyz",
}


def test_tags_keep_the_bytes_peers_already_send() -> None:
    # Agents of an earlier release route by these bytes: a proto renumbering must show here.
    assert (wire.PROGRESS, wire.HEADER, wire.CHUNK, wire.TRAILER, wire.HANDOFF, wire.NOISE, wire.BANDWIDTH_DATA) == \
        (0x0A, 0x12, 0x1A, 0x22, 0x2A, 0x32, 0x0A)


@pytest.mark.parametrize("field, tag", [("progress", wire.PROGRESS), ("header", wire.HEADER),
                                        ("trailer", wire.TRAILER), ("handoff", wire.HANDOFF),
                                        ("noise", wire.NOISE), ("data", wire.BANDWIDTH_DATA)])
def test_each_tag_is_the_first_byte_protobuf_writes_in_every_message_with_the_field(field: str, tag: int) -> None:
    kinds = [m for m in (*wire.RELAYED, pb.BandwidthChunk) if field in m.DESCRIPTOR.fields_by_name]
    assert kinds
    for kind in kinds:
        raw = kind(**{field: _SAMPLES[field]}).SerializeToString()
        assert raw[0] == tag, kind.DESCRIPTOR.name
        assert not wire.is_chunk(raw)


@pytest.mark.parametrize("size", SIZES)
def test_hand_written_chunks_are_the_protobuf_encoding_of_every_relayed_message(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    raw = wire.encode_chunk(data)
    for kind in wire.RELAYED:
        assert raw == kind(chunk=data).SerializeToString(), kind.DESCRIPTOR.name
    assert wire.is_chunk(raw)
    decoded = wire.decode(raw, first_field="progress")
    assert decoded.kind == "chunk" and decoded.payload is not None and bytes(decoded.payload) == data
    for kind in (spb.DenoiseRequest, spb.DenoiseEvent, spb.CfgRequest, spb.CfgEvent):
        msg = messages.decode(raw, kind)
        assert msg.kind == "chunk" and bytes(msg.value) == data
    bandwidth = wire.encode_bandwidth_chunk(data)
    assert pb.BandwidthChunk.FromString(bandwidth) == pb.BandwidthChunk(data=data)
    if size:  # protobuf leaves out an empty non-oneof field; the hand-written one keeps it (parses the same)
        assert bandwidth == pb.BandwidthChunk(data=data).SerializeToString()
    assert wire.bandwidth_payload_size(bandwidth) == size


def test_written_messages_are_the_protobuf_encoding() -> None:
    header, trailer, progress = _SAMPLES["header"], _SAMPLES["trailer"], _SAMPLES["progress"]
    spec = pb.PostSpec(output_name="clip", encode=True)
    assert wire.encode_header(header) == pb.PostProcessRequest(header=header).SerializeToString()
    assert wire.encode_trailer(trailer) == spb.DenoiseRequest(trailer=trailer).SerializeToString()
    assert wire.encode_progress(progress) == spb.CfgEvent(progress=progress).SerializeToString()
    assert wire.encode_spec(spec) == pb.PostProcessRequest(spec=spec).SerializeToString()


def test_a_tag_is_refused_when_the_protos_disagree_on_its_number() -> None:
    # `request` is field 1 of a DenoiseSpec but 5 of a HandoffHeader: one byte cannot route both.
    with pytest.raises(RuntimeError, match="request"):
        wire._tag("request", spb.DenoiseSpec, spb.HandoffHeader)
    with pytest.raises(RuntimeError, match="step"):  # a varint, not a length-delimited field
        wire._tag("step", pb.Progress)
    assert wire._tag("request", spb.DenoiseSpec, spb.CfgSpec) == 0x0A

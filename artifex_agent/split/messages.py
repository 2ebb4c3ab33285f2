"""Split stream messages (proto/artifex/v1/split.proto): hand-written chunk fast path, tensors as raw bytes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from artifex_agent.errors import StreamError
from artifex_agent.proto.artifex.v1 import split_pb2 as spb
from artifex_agent.transport import wire

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
}


@dataclass(slots=True)
class Message:
    """One decoded message: `kind` is the oneof field's name; chunks keep a zero-copy view."""

    kind: str
    value: Any


def decode(raw: bytes, cls: Any) -> Message:
    """Decode a DenoiseRequest/DenoiseEvent/CfgRequest/CfgEvent; chunks are not copied."""
    if wire.is_chunk(raw):
        # The chunk field has one number in every split message and GenerateEvent (wire.RELAYED).
        return Message("chunk", wire.decode(raw, first_field="progress").payload)
    try:
        msg = cls.FromString(raw)
    except Exception as exc:  # protobuf raises DecodeError, and others on garbage
        raise StreamError(f"malformed message: {type(exc).__name__}") from None
    which = msg.WhichOneof(msg.DESCRIPTOR.oneofs[0].name)
    if which is None:
        raise StreamError("empty message in stream")
    value = getattr(msg, which)
    return Message(which, memoryview(value) if which == "chunk" else value)


def denoise_event(**field: Any) -> bytes:
    return spb.DenoiseEvent(**field).SerializeToString()


def denoise_request(**field: Any) -> bytes:
    return spb.DenoiseRequest(**field).SerializeToString()


def cfg_event(**field: Any) -> bytes:
    return spb.CfgEvent(**field).SerializeToString()


def cfg_request(**field: Any) -> bytes:
    return spb.CfgRequest(**field).SerializeToString()


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def tensor_bytes(t: torch.Tensor) -> np.ndarray:
    """The tensor's bytes as a flat uint8 array (bfloat16 too, which numpy has no type for)."""
    return t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()


def tensor_from(buf: bytes | bytearray | memoryview, dtype: str, shape: tuple[int, ...]) -> torch.Tensor:
    """A tensor with the given dtype name and shape over `buf` (a bytearray is used in place, others copied)."""
    if dtype not in DTYPES:
        raise StreamError(f"tensor dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    size = DTYPES[dtype].itemsize * math.prod(shape)
    if len(buf) != size:
        raise StreamError(f"tensor of {dtype} {list(shape)} needs {size} bytes, got {len(buf)}")
    if not size:
        return torch.empty(shape, dtype=DTYPES[dtype])
    owned = buf if isinstance(buf, bytearray) else bytearray(buf)
    flat = torch.frombuffer(owned, dtype=torch.uint8)
    return flat.view(DTYPES[dtype]).reshape(shape)

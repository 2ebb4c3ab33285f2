"""The proto enums that carry artifex_agent/vocabulary.py's words, each mapped once, both ways.

An enum value is the word upper-cased under the enum's prefix ("h264" <-> CODEC_H264), so a
word added to the vocabulary without its enum value (or the reverse) fails at import, not on
the wire. A value that is UNSPECIFIED, or one a newer peer sent that this side does not know,
is refused (RequestError: INVALID_ARGUMENT) unless the caller names what unset means; a
stage, which only describes progress, is never refused (stage_from_pb).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from artifex_agent import vocabulary as v
from artifex_agent.errors import RequestError
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.proto.artifex.v1 import jobs_pb2 as jpb

logger = logging.getLogger(__name__)
W = TypeVar("W", bound=str)


class EnumMap(Generic[W]):
    """One proto enum <-> one vocabulary tuple, by name: PREFIX_WORD (upper case, "-" as "_")."""

    def __init__(self, enum: Any, prefix: str, words: Sequence[W], what: str) -> None:
        self.what = what
        self.words = tuple(words)
        self._to = {word: enum.Value(prefix + word.upper().replace("-", "_")) for word in words}
        self._from = {value: word for word, value in self._to.items()}
        known = set(enum.values()) - {0}
        if known != set(self._from):  # the proto and the vocabulary must name the same things
            extra = sorted(enum.Name(n) for n in known - set(self._from))
            raise ImportError(f"{enum.DESCRIPTOR.full_name} and the vocabulary differ: {extra or self.words}")

    def to_pb(self, word: str) -> Any:
        """The enum value (an int; typed Any since the generated stubs type each enum as its own class)."""
        try:
            return self._to[word]  # type: ignore[index]
        except KeyError:
            raise RequestError(f"{self.what} {word!r} is not one of {', '.join(self.words)}") from None

    def known(self, value: int) -> W | None:
        """The word for `value`, None when it has none (UNSPECIFIED, or a newer peer's value)."""
        return self._from.get(value)

    def from_pb(self, value: int, unset: W | None = None) -> W:
        """The word for `value`; `unset` when 0 and the proto documents a default, else RequestError."""
        if value == 0 and unset is not None:
            return unset
        try:
            return self._from[value]
        except KeyError:
            known = ", ".join(self.words)
            why = "is unset" if value == 0 else f"value {value} is not one this side knows"
            raise RequestError(f"{self.what} {why} (one of {known})") from None


CODEC = EnumMap[v.Codec](pb.Codec, "CODEC_", v.CODECS, "codec")
ENCODER_CHOICE = EnumMap[v.EncoderChoice](pb.EncoderChoice, "ENCODER_CHOICE_", v.ENCODERS, "encoder")
VIDEO_ENCODER = EnumMap[str](pb.VideoEncoder, "VIDEO_ENCODER_", v.VIDEO_ENCODERS, "video encoder")
MODEL_KIND = EnumMap[v.ModelKind](pb.ModelKind, "MODEL_KIND_", v.MODEL_KINDS, "model kind")
SPLIT = EnumMap[v.Split](jpb.SplitMode, "SPLIT_MODE_", v.SPLITS, "split")
DECODE_ON = EnumMap[v.DecodeOn](jpb.DecodeOn, "DECODE_ON_", v.DECODE_ON, "decode_on")
EVENT_KIND = EnumMap[v.EventKind](jpb.JobEventKind, "JOB_EVENT_KIND_", v.EVENT_KINDS, "job event kind")
JOB_STATE = EnumMap[v.JobState](jpb.JobState, "JOB_STATE_", v.JOB_STATES, "job state")
STAGE = EnumMap[v.Stage](pb.Stage, "STAGE_", v.STAGES, "stage")
_unknown_stages: set[int] = set()  # the values already logged, so a chatty peer logs each once


def codec_to_pb(name: str) -> Any:
    """A codec or its alias ("h265") as the wire's Codec."""
    return CODEC.to_pb(v.canonical_codec(name))


def post_codec(spec: pb.PostSpec) -> v.Codec:
    """The codec a PostSpec asks for (unset: h264, as agent.proto documents)."""
    return CODEC.from_pb(spec.video_codec, unset="h264")


def post_encoder(spec: pb.PostSpec) -> v.EncoderChoice:
    """The encoder choice a PostSpec asks for (unset: auto, as agent.proto documents)."""
    return ENCODER_CHOICE.from_pb(spec.encoder_choice, unset="auto")


def result_codec(result: pb.PostResult) -> str:
    """The codec a PostResult reports; "" when nothing was encoded."""
    return CODEC.from_pb(result.video_codec) if result.video_codec else ""


def result_encoder(result: pb.PostResult) -> str:
    """The libavcodec encoder a PostResult reports ("libx264"...); "" when nothing was encoded."""
    return VIDEO_ENCODER.from_pb(result.video_encoder) if result.video_encoder else ""


def stage_to_pb(word: str) -> Any:
    """A stage word as the wire's Stage; "" (none given) and "unspecified" as STAGE_UNSPECIFIED."""
    return pb.STAGE_UNSPECIFIED if word in ("", v.UNSPECIFIED_STAGE) else STAGE.to_pb(word)


def stage_from_pb(value: int) -> str:
    """The stage word for `value`, never refused: "unspecified" for unset or unknown values.

    A stage only describes progress, so a newer agent's stage must not break a Generate or
    Watch stream; an unknown value is logged once per value and otherwise ignored.
    """
    word = STAGE.known(value)
    if word is not None:
        return word
    if value and value not in _unknown_stages:
        _unknown_stages.add(value)
        logger.warning("a peer sent stage %d, which this side does not know (a newer peer?): shown as %r",
                       value, v.UNSPECIFIED_STAGE)
    return v.UNSPECIFIED_STAGE

"""The words a job is described in, defined once: codecs, encoders, splits, states, stages, limits.

No torch, gRPC or protobuf here, so every layer (CLI, watcher, coordinator, engines) can import
it; the proto enums that carry these words are mapped in artifex_agent/wire_enums.py.
"""

from __future__ import annotations

from typing import Literal, get_args

from artifex_agent.errors import RequestError

# ---------------------------------------------------------------- codecs and encoders

Codec = Literal["h264", "hevc", "av1", "vp9"]
CODECS: tuple[Codec, ...] = get_args(Codec)
# Other names a user may write for a codec; the wire and the encoder only ever see CODECS.
CODEC_ALIASES: dict[str, Codec] = {"h265": "hevc"}
# What a job file, a flag or PostSpec may name (a codec or an alias), in the order help shows them.
CodecName = Literal["h264", "hevc", "h265", "av1", "vp9"]
CODEC_NAMES: tuple[CodecName, ...] = get_args(CodecName)

EncoderChoice = Literal["auto", "software", "nvenc"]
ENCODERS: tuple[EncoderChoice, ...] = get_args(EncoderChoice)
# codec -> (its NVENC encoder or None, its software encoder), as libavcodec and Info name them.
CODEC_ENCODERS: dict[Codec, tuple[str | None, str]] = {
    "h264": ("h264_nvenc", "libx264"),
    "hevc": ("hevc_nvenc", "libx265"),
    "av1": ("av1_nvenc", "libsvtav1"),
    "vp9": (None, "libvpx-vp9"),
}
# Every encoder above, as an agent probes them and PostResult names the one it used.
VIDEO_ENCODERS: tuple[str, ...] = ("h264_nvenc", "hevc_nvenc", "av1_nvenc", "libx264", "libx265", "libsvtav1",
                                   "libvpx-vp9")


def canonical_codec(name: str) -> Codec:
    """The codec `name` means ("h265" -> "hevc"); RequestError naming the choices when none."""
    codec = CODEC_ALIASES.get(name, name)
    if codec not in CODECS:
        raise RequestError(f"unknown codec {name!r} (one of {', '.join(CODEC_NAMES)})")
    return codec  # type: ignore[return-value]


def encoders_for(codec: str, choice: str = "auto") -> tuple[str, ...]:
    """The libavcodec encoders that write `codec` under an encoder choice (auto: NVENC first)."""
    nvenc, software = CODEC_ENCODERS[canonical_codec(codec)]
    if choice == "nvenc":
        return (nvenc,) if nvenc else ()
    if choice == "software":
        return (software,)
    return (nvenc, software) if nvenc else (software,)


# ---------------------------------------------------------------- how a job runs

Split = Literal["none", "experts", "cfg", "auto"]
SPLITS: tuple[Split, ...] = get_args(Split)
DecodeOn = Literal["generate", "post"]
DECODE_ON: tuple[DecodeOn, ...] = get_args(DecodeOn)

# A job's states at the coordinator (coordinator/job.py holds the moves between them).
JobState = Literal["queued", "running", "done", "failed", "cancelled"]
JOB_STATES: tuple[JobState, ...] = get_args(JobState)
TERMINAL: frozenset[JobState] = frozenset({"done", "failed", "cancelled"})
# What a job event reports: a state change, a progress step, a retry to come, anything else.
EventKind = Literal["state", "progress", "retry", "info"]
EVENT_KINDS: tuple[EventKind, ...] = get_args(EventKind)

# What an agent reports it is doing (Progress, in agent streams), then what a job at the
# coordinator is doing (Job.stage; coordinator/run_events.py maps the first onto the second). JobEvent carries
# either: a state event the job's stage, a progress event the agent's. The wire's Stage enum
# (wire_enums.STAGE) names the same words; one a peer sends that this side does not know arrives
# as UNSPECIFIED_STAGE (wire_enums.stage_from_pb), shown and never acted on.
Stage = Literal["queued", "accepted", "denoise", "handoff", "decode", "stream", "receive", "post", "split",
                "failover", "error", "waiting", "generating", "streaming", "done", "failed", "cancelled"]
STAGES: tuple[Stage, ...] = get_args(Stage)
UNSPECIFIED_STAGE = "unspecified"

# Kinds of model folder an agent finds (engines/models.py).
ModelKind = Literal["t2v", "i2v", "ti2v", "upscale"]
MODEL_KINDS: tuple[ModelKind, ...] = get_args(ModelKind)

# ---------------------------------------------------------------- limits

# Seeds travel as int64 (jobs.proto, agent.proto), which binds before torch's
# Generator.manual_seed (it takes up to 2**64-1). Clip i of a job uses seed + i, so every
# clip's seed must fit, not only the first.
MAX_SEED = 2**63 - 1

# A model, preset or scheduler name, and each folder or file name of an output, image or
# upscale model: NAME_MAX is 255 bytes, and an output name still gets suffixes (clip number,
# ".mp4", a temporary suffix). Jobs (JobSpec.validate) and agents (engines/models.py) share it.
MAX_NAME_BYTES = 128


def check_seeds(seeds: list[int] | tuple[int, ...]) -> None:
    """Every clip's seed within 0..MAX_SEED (RequestError), the same words at submit and in the engine."""
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise RequestError(f"seed must be within 0..{MAX_SEED} (2**63-1) for every clip (clip i uses "
                               f"seed + i); got {seed!r}")


def clip_seeds(seed: int, clips: int) -> list[int]:
    """The seed of each of `clips` clips when one seed is given: seed + i."""
    return [seed + i for i in range(clips)]

"""The one translation of a JobSpec to and from protobuf: jobs.proto's JobSpec, and the
GenerateRequest and PostSpec an agent receives for it.

Field names differ only where the wire follows agent.proto (`frames` travels as `num_frames`);
enums map through artifex_agent/wire_enums.py. Whatever comes in is checked by JobSpec.validate.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from artifex_agent import wire_enums
from artifex_agent.errors import RequestError
from artifex_agent.jobspec import JobProblems, JobSpec, KnownModels, Problems
from artifex_agent.lora_ref import LoraRef
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.proto.artifex.v1 import jobs_pb2 as jpb

# JobSpec field -> its name on the wire (jobs.proto JobSpec and agent.proto GenerateRequest); others keep theirs.
WIRE_NAMES = {"frames": "num_frames", "guidance": "guidance_scale", "guidance_2": "guidance_scale_2",
              "negative": "negative_prompt", "codec": "video_codec", "encoder": "encoder_choice",
              "split": "split_mode", "decode_on": "decode_on_side"}
# JobSpec fields that travel as proto enums, and how each maps.
_ENUMS: dict[str, wire_enums.EnumMap[Any]] = {"codec": wire_enums.CODEC, "encoder": wire_enums.ENCODER_CHOICE,
                                              "split": wire_enums.SPLIT, "decode_on": wire_enums.DECODE_ON}
# JobSpec fields that travel as proto scalars (prompts, tags and loras are repeated/map fields).
_SCALARS = tuple(f.name for f in dataclasses.fields(JobSpec)
                 if not f.name.startswith("_") and f.name not in ("prompts", "tags", "loras"))


def spec_to_pb(spec: JobSpec, *, image_data: bool = True) -> jpb.JobSpec:
    """Every field set explicitly, so the receiver never falls back to a different default.

    Except with an unresolved preset: then only the fields the client gave travel, and the
    coordinator fills the others from the preset. `image_data=False` leaves the i2v image's
    bytes out (a job read back: a List page or an event must not carry megabytes per job).
    """
    msg = jpb.JobSpec(prompts=list(spec.prompts), tags=dict(spec.tags), loras=lora_refs_to_pb(spec.loras))
    name = ""
    try:
        for name in _SCALARS:
            if name == "image_data" and not (image_data and spec.image_data):
                continue
            if not spec.preset or spec.given(name):
                value = getattr(spec, name)
                if name == "codec":
                    value = wire_enums.codec_to_pb(value)
                elif name in _ENUMS:
                    value = _ENUMS[name].to_pb(value)
                setattr(msg, WIRE_NAMES.get(name, name), value)
    except (ValueError, TypeError) as exc:
        raise RequestError(f"job field {name!r} cannot be sent: {exc}") from None
    return msg


def spec_from_pb(msg: jpb.JobSpec, cluster: KnownModels | None = None, *, check: bool = True) -> JobSpec:
    """Unset fields take JobSpec's defaults; an UNSPECIFIED or unknown enum and any bad value: RequestError.

    With `cluster`, checked against what its agents hold too (JobSpec.validate), every problem at once.
    `check=False`: a job the coordinator accepted, read back (a List, an event), is not checked again,
    since the checks may have tightened since it was stored (as JobSpec.from_stored).
    """
    raw: dict[str, object] = {"prompts": list(msg.prompts)}
    if msg.tags:
        raw["tags"] = dict(msg.tags)
    if msg.loras:
        raw["loras"] = lora_refs_from_pb(msg.loras)
    found = Problems()
    for name in _SCALARS:
        wire = WIRE_NAMES.get(name, name)
        if msg.HasField(wire):
            value = getattr(msg, wire)
            if name not in _ENUMS:
                raw[name] = value
            else:  # a bad enum is one problem among the others; the field keeps its default meanwhile
                found.run(lambda n=name, v=value: raw.update({n: _ENUMS[n].from_pb(v)}))
    if not check:
        found.raise_any()
        return JobSpec(**raw, _given=frozenset(raw))  # type: ignore[arg-type]
    if found.items:
        found.run(JobSpec.from_dict, raw, cluster)  # the spec's other problems too
        raise JobProblems(found.items)
    return JobSpec.from_dict(raw, cluster)


def generate_request(spec: JobSpec, *, job_id: str = "", prompts: list[str] | None = None,
                     output: pb.PayloadKind = pb.PAYLOAD_KIND_RGB24) -> pb.GenerateRequest:
    """What the generating agent receives for `spec` (or for a batch's `prompts`)."""
    return pb.GenerateRequest(
        model=spec.model, task=pb.TASK_I2V if spec.i2v else pb.TASK_T2V, prompts=prompts or spec.prompts,
        negative_prompt=spec.negative, width=spec.width, height=spec.height, num_frames=spec.frames,
        steps=spec.steps, guidance_scale=spec.guidance, guidance_scale_2=spec.guidance_2, seed=spec.seed,
        fps=spec.fps, image=spec.image_data, image_path=spec.image, output=output, job_id=job_id,
        loras=lora_refs_to_pb(spec.loras),
        scheduler=spec.scheduler, shift=spec.shift or None, boundary_ratio=spec.boundary_ratio or None,
        preview_every=spec.preview_every)


def post_spec(spec: JobSpec, output_name: str, *, job_id: str = "", split_clips: bool | None = None) -> pb.PostSpec:
    """What the post agent receives for `spec`, writing `output_name`."""
    return pb.PostSpec(output_name=output_name, upscale=spec.upscale, upscale_model=spec.upscale_model,
                       video_codec=wire_enums.codec_to_pb(spec.codec), crf=spec.crf, preset=spec.encode_preset,
                       fps=spec.fps, encoder_choice=wire_enums.ENCODER_CHOICE.to_pb(spec.encoder), encode=True,
                       job_id=job_id, split_clips=len(spec.prompts) > 1 if split_clips is None else split_clips,
                       source_path=spec.post_input)


def lora_refs_to_pb(loras: list[LoraRef] | tuple[LoraRef, ...]) -> list[pb.LoraRef]:
    return [pb.LoraRef(name=ref.name, strength=ref.strength, expert=ref.expert) for ref in loras]


def lora_refs_from_pb(msgs: Any) -> list[LoraRef]:
    """Wire LoRA references as LoraRefs (an empty expert means both); not validated here."""
    return [LoraRef(m.name, m.strength, m.expert or "both") for m in msgs]

"""One vocabulary: the words, their proto enums, the field numbers, the seed and name limits."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor

from artifex_agent import vocabulary as v
from artifex_agent import wire_enums
from artifex_agent.config import AgentConfig, ClusterConfig
from artifex_agent.coordinator import messages, retry
from artifex_agent.coordinator.agents import AgentHandle
from artifex_agent.coordinator.cache import ResultsCache
from artifex_agent.coordinator.events import EventBus
from artifex_agent.coordinator.jobs import JobQueue
from artifex_agent.coordinator.run import Run
from artifex_agent.coordinator.run_events import _STAGE
from artifex_agent.coordinator.scheduler import Scheduler
from artifex_agent.coordinator.store import Store
from artifex_agent.engines.encode import CONTAINERS
from artifex_agent.errors import RequestError
from artifex_agent.jobspec import JobSpec
from artifex_agent.jobspec_pb import post_spec, spec_from_pb, spec_to_pb
from artifex_agent.lora_ref import LoraRef
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.proto.artifex.v1 import jobs_pb2 as jpb
from artifex_agent.proto.artifex.v1 import split_pb2
from artifex_agent.watcher import submitter


def _messages(desc: Descriptor) -> list[Descriptor]:
    return [desc, *(m for nested in desc.nested_types for m in _messages(nested))]


@pytest.mark.parametrize("module", [pb, jpb, split_pb2], ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_every_field_number_up_to_the_highest_is_used_or_reserved(module: object) -> None:
    gaps = {}
    for top in module.DESCRIPTOR.message_types_by_name.values():  # type: ignore[attr-defined]
        for desc in _messages(top):
            if desc.GetOptions().map_entry:
                continue
            proto = descriptor_pb2.DescriptorProto()
            desc.CopyToProto(proto)
            used = {f.number for f in desc.fields}
            reserved = {n for r in proto.reserved_range for n in range(r.start, r.end)}
            assert not used & reserved, desc.full_name
            missing = sorted(set(range(1, max(used | reserved, default=0) + 1)) - used - reserved)
            if missing:
                gaps[desc.full_name] = missing
    assert gaps == {}


def test_the_split_streams_reserve_the_numbers_they_skip() -> None:
    def reserved(desc: Descriptor) -> set[int]:
        proto = descriptor_pb2.DescriptorProto()
        desc.CopyToProto(proto)
        return {n for r in proto.reserved_range for n in range(r.start, r.end)}

    assert reserved(split_pb2.DenoiseRequest.DESCRIPTOR) == {2}
    assert reserved(split_pb2.CfgRequest.DESCRIPTOR) == {2, 5}
    assert reserved(split_pb2.CfgEvent.DESCRIPTOR) == {5}


def test_the_job_contracts_use_the_agent_contract_field_names() -> None:
    job_fields = set(jpb.JobSpec.DESCRIPTOR.fields_by_name)
    generate_fields = pb.GenerateRequest.DESCRIPTOR.fields_by_name
    for name in ("num_frames", "guidance_scale", "guidance_scale_2", "negative_prompt"):
        assert name in job_fields
        # Same name, same number: a reader of either contract sees the same field.
        assert generate_fields[name].name == jpb.JobSpec.DESCRIPTOR.fields_by_name[name].name
    assert not job_fields & {"frames", "guidance", "guidance_2", "negative", "codec", "encoder", "split"}


def test_each_word_list_matches_its_enum_both_ways() -> None:
    maps = {wire_enums.CODEC: v.CODECS, wire_enums.ENCODER_CHOICE: v.ENCODERS,
            wire_enums.VIDEO_ENCODER: v.VIDEO_ENCODERS, wire_enums.MODEL_KIND: v.MODEL_KINDS,
            wire_enums.SPLIT: v.SPLITS, wire_enums.DECODE_ON: v.DECODE_ON, wire_enums.EVENT_KIND: v.EVENT_KINDS,
            wire_enums.JOB_STATE: v.JOB_STATES, wire_enums.STAGE: v.STAGES}
    for enum_map, words in maps.items():
        values = [enum_map.to_pb(word) for word in words]
        assert 0 not in values and len(set(values)) == len(words)
        assert [enum_map.from_pb(value) for value in values] == list(words)


def test_the_codec_vocabulary_is_the_encoders_and_containers_vocabulary() -> None:
    assert set(v.CODEC_ENCODERS) == set(v.CODECS)
    named = {e for pair in v.CODEC_ENCODERS.values() for e in pair if e}
    assert named == set(v.VIDEO_ENCODERS)
    assert set(CONTAINERS[".mp4"][1]) == set(v.CODECS)
    assert set(v.CODEC_NAMES) == set(v.CODECS) | set(v.CODEC_ALIASES)
    assert v.canonical_codec("h265") == "hevc" and wire_enums.codec_to_pb("h265") == pb.CODEC_HEVC
    with pytest.raises(RequestError, match="unknown codec 'xvid'"):
        v.canonical_codec("xvid")
    assert v.encoders_for("vp9", "nvenc") == ()
    assert v.encoders_for("h265") == ("hevc_nvenc", "libx265")


@pytest.mark.parametrize(("build", "words"), [
    (lambda: jpb.JobSpec(prompts=["a fox"], video_codec=99), "codec value 99 is not one this side knows"),
    (lambda: jpb.JobSpec(prompts=["a fox"], video_codec=pb.CODEC_UNSPECIFIED), "codec is unset"),
    (lambda: jpb.JobSpec(prompts=["a fox"], encoder_choice=pb.ENCODER_CHOICE_UNSPECIFIED), "encoder is unset"),
    (lambda: jpb.JobSpec(prompts=["a fox"], split_mode=42), "split value 42"),
    (lambda: jpb.JobSpec(prompts=["a fox"], decode_on_side=jpb.DECODE_ON_UNSPECIFIED), "decode_on is unset"),
])
def test_an_unknown_or_unspecified_enum_in_a_job_is_refused(build: object, words: str) -> None:
    with pytest.raises(RequestError) as err:
        spec_from_pb(build())  # type: ignore[operator]
    assert words in str(err.value)


def test_a_post_spec_documents_its_unset_defaults_and_refuses_unknown_values() -> None:
    assert (wire_enums.post_codec(pb.PostSpec()), wire_enums.post_encoder(pb.PostSpec())) == ("h264", "auto")
    with pytest.raises(RequestError, match="codec value 9"):
        wire_enums.post_codec(pb.PostSpec(video_codec=9))  # type: ignore[arg-type]
    with pytest.raises(RequestError, match="encoder value 7"):
        wire_enums.post_encoder(pb.PostSpec(encoder_choice=7))  # type: ignore[arg-type]
    assert wire_enums.result_codec(pb.PostResult()) == "" == wire_enums.result_encoder(pb.PostResult())
    spec = post_spec(JobSpec(prompts=["a"], codec="vp9", encoder="software"), "out")
    assert (spec.video_codec, spec.encoder_choice) == (pb.CODEC_VP9, pb.ENCODER_CHOICE_SOFTWARE)


def test_a_spec_with_every_field_set_survives_the_wire_and_an_alias_arrives_as_its_codec() -> None:
    spec = JobSpec(prompts=["a", "b"], model="m", width=320, height=192, frames=17, steps=7, guidance=1.5,
                   guidance_2=2.5, negative="blur", seed=2**40, fps=24.0, image="in/x.png", upscale=4,
                   upscale_model="x4.pth", codec="hevc", crf=0, encode_preset="slow", encoder="nvenc", output="o/p",
                   priority=-3, split="experts", decode_on="post", tags={"k": "v"},
                   loras=[LoraRef("ink", 0.5, "high")], scheduler="euler", shift=5.0, boundary_ratio=0.9,
                   preset="fast").validate()
    msg = spec_to_pb(spec)
    assert (msg.num_frames, msg.guidance_scale, msg.guidance_scale_2, msg.negative_prompt) == (17, 1.5, 2.5, "blur")
    assert (msg.split_mode, msg.decode_on_side) == (jpb.SPLIT_MODE_EXPERTS, jpb.DECODE_ON_POST)
    back = spec_from_pb(jpb.JobSpec.FromString(msg.SerializeToString()))
    assert back == spec
    alias = JobSpec.from_dict({"prompt": "a fox", "codec": "h265"})
    assert alias.codec == "hevc" and spec_from_pb(spec_to_pb(alias)) == alias


@pytest.mark.parametrize(("seed", "prompts", "ok"), [
    (v.MAX_SEED, 1, True), (v.MAX_SEED, 2, False), (v.MAX_SEED - 1, 2, True), (-1, 1, False), (0, 1, True),
])
def test_the_seed_limit_is_checked_when_a_job_is_made(seed: int, prompts: int, ok: bool) -> None:
    raw = {"prompts": [f"p{i}" for i in range(prompts)], "seed": seed}
    if ok:
        JobSpec.from_dict(raw)
        jpb.JobSpec(seed=seed + prompts - 1)  # and every clip's seed fits the wire's int64
        return
    with pytest.raises(RequestError, match=r"seed must be within 0\.\.9223372036854775807"):
        JobSpec.from_dict(raw)


def test_refusals_are_defined_once_and_the_watcher_waits_out_two_of_them() -> None:
    assert submitter.REFUSAL_CODES < retry.REFUSALS
    assert retry.REFUSALS - submitter.REFUSAL_CODES == {grpc.StatusCode.UNAUTHENTICATED,
                                                        grpc.StatusCode.UNIMPLEMENTED}


def test_a_name_at_the_shared_limit_passes_for_jobs_and_loras_and_one_byte_more_does_not() -> None:
    name = "n" * v.MAX_NAME_BYTES
    JobSpec.from_dict({"prompt": "a fox", "model": name, "loras": [name]})
    with pytest.raises(RequestError, match=f"limit is {v.MAX_NAME_BYTES}"):
        JobSpec.from_dict({"prompt": "a fox", "model": name + "n"})
    with pytest.raises(RequestError, match=f"longer than {v.MAX_NAME_BYTES} bytes"):
        LoraRef.parse(name + "n")
    from artifex_agent.engines.models import check_name_length

    check_name_length(name, "model name")
    with pytest.raises(RequestError, match=f"the limit is {v.MAX_NAME_BYTES}"):
        check_name_length(name + "n", "model name")


def test_watch_starts_with_a_snapshot_event_that_travels_as_such(tmp_path: Path) -> None:
    async def first_events() -> list[messages.JobEvent]:
        scheduler = Scheduler(ClusterConfig(), Store(tmp_path / "jobs.db").open(), EventBus(),
                              ResultsCache(tmp_path / "cache"))
        queue = JobQueue(scheduler)
        job, _ = await queue.submit(JobSpec.from_dict({"prompt": "a fox", "seed": 1}))
        events = []
        async for event in queue.watch(job.id, history=True):
            events.append(event)
            if event.snapshot:
                break
        return events

    events = asyncio.run(first_events())
    assert [e.snapshot for e in events] == [False, True]  # the recorded "queued", then the job as it is now
    snap = messages.event_from_pb(messages.event_to_pb(events[-1]))
    assert snap.snapshot and snap.kind == "state" and snap.state == "queued" and snap.message == ""
    assert not messages.event_from_pb(messages.event_to_pb(events[0])).snapshot
    with pytest.raises(RequestError, match="job event kind is unset"):
        messages.event_from_pb(jpb.JobEvent(job_id="j", state=jpb.JOB_STATE_QUEUED))


def test_every_stage_the_coordinator_maps_is_a_stage_word_and_unset_travels_as_unspecified() -> None:
    assert set(_STAGE) | set(_STAGE.values()) <= set(v.STAGES)
    assert v.UNSPECIFIED_STAGE not in v.STAGES  # it is STAGE_UNSPECIFIED (0), not a word of its own
    assert wire_enums.stage_to_pb("") == wire_enums.stage_to_pb(v.UNSPECIFIED_STAGE) == pb.STAGE_UNSPECIFIED
    assert wire_enums.stage_from_pb(pb.STAGE_UNSPECIFIED) == v.UNSPECIFIED_STAGE
    with pytest.raises(RequestError, match="stage 'loading' is not one of"):
        wire_enums.stage_to_pb("loading")  # this side sending a word it has no value for is a bug


def test_an_agent_stage_this_side_does_not_know_reaches_watch_as_unspecified_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    newer = max(pb.Stage.values()) + 41  # a stage a newer agent might send (unique to this test: logged once)

    async def watched() -> tuple[list[messages.JobEvent], str]:
        scheduler = Scheduler(ClusterConfig(), Store(tmp_path / "jobs.db").open(), EventBus(),
                              ResultsCache(tmp_path / "cache"))
        queue = JobQueue(scheduler)
        job, _ = await queue.submit(JobSpec.from_dict({"prompt": "a fox", "seed": 1}))
        entry = scheduler.entries[job.id]
        entry.job.start("gen", "gen", "b1", time.time())
        gen = AgentHandle(AgentConfig(name="gen"), stub=None, channel=None)  # type: ignore[arg-type]
        run = Run("b1", [entry], gen=gen, post=gen)
        events: list[messages.JobEvent] = []

        async def watch() -> None:
            async for event in queue.watch(job.id):
                # What a Watch client reads: the event through the wire and back.
                events.append(messages.event_from_pb(jpb.JobEvent.FromString(
                    messages.event_to_pb(event).SerializeToString())))
                if len(events) == 3:
                    return

        watching = asyncio.ensure_future(watch())
        while not events:  # the snapshot: subscribed
            await asyncio.sleep(0.01)
        scheduler.progress(run, None, "generate", pb.Progress(current_stage=newer, step=1, total=2))
        stage_after_unknown = entry.job.stage
        for stage in (newer, pb.STAGE_DENOISE):  # the first is thinned out (same stage, same step)
            scheduler.progress(run, None, "generate", pb.Progress(current_stage=stage, step=1, total=2))
        await asyncio.wait_for(watching, 10)
        return events, stage_after_unknown

    with caplog.at_level(logging.WARNING, logger=wire_enums.__name__):
        events, stage_after_unknown = asyncio.run(watched())
    assert [(e.kind, e.stage) for e in events] == [
        ("state", "generating"), ("progress", v.UNSPECIFIED_STAGE), ("progress", "denoise")]
    assert stage_after_unknown == v.UNSPECIFIED_STAGE
    logged = [r.getMessage() for r in caplog.records if r.name == wire_enums.__name__]
    assert logged == [f"a peer sent stage {newer}, which this side does not know (a newer peer?): "
                      "shown as 'unspecified'"]

"""JobSpec on its own: wrong types and oversized fields refused with the field named."""

from __future__ import annotations

import dataclasses
import tomllib
from typing import Any

import pytest

from artifex_agent.coordinator.messages import Job, job_to_pb, spec_to_pb
from artifex_agent.errors import RequestError
from artifex_agent.jobspec import (
    MAX_IDEMPOTENCY_KEY_CHARS,
    MAX_IMAGE_BYTES,
    MAX_NAME_BYTES,
    MAX_PATH_CHARS,
    MAX_PROMPT_CHARS,
    MAX_PROMPTS,
    MAX_TAG_KEY_CHARS,
    MAX_TAG_VALUE_CHARS,
    MAX_TAGS,
    JobSpec,
    check_idempotency_key,
)
from artifex_agent.jobspec_pb import generate_request, post_spec
from artifex_agent.lora_ref import MAX_LORAS, LoraRef
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.transport.options import MAX_CONTROL_BYTES, MAX_MESSAGE_BYTES


def test_a_number_in_tags_is_refused_naming_the_tag() -> None:
    raw = tomllib.loads('prompt = "a fox"\n[tags]\nx = 1\n')
    with pytest.raises(RequestError, match=r"tags\['x'\] must be a string; got int"):
        JobSpec.from_dict(raw)
    with pytest.raises(RequestError, match=r"tags\['x'\]"):
        JobSpec(prompts=["a fox"], tags={"x": 1}).validate()  # type: ignore[dict-item]


@pytest.mark.parametrize("raw, words", [
    ({"prompts": ["a", 3]}, "prompts[1] must be a string"),
    ({"prompts": "a fox"}, "'prompts' must be a list of strings"),
    ({"tags": "x=1"}, "'tags' must be a table of strings"),
    ({"width": True}, "'width' must be an integer; got bool"),
    ({"width": 1.5}, "'width' must be an integer; got float"),
    ({"model": 7}, "'model' must be a string; got int"),
    ({"output": ["a"]}, "'output' must be a string; got list"),
    ({"guidance": "4"}, "'guidance' must be a number; got str"),
    ({"guidance": float("nan")}, "finite"),
    ({"fps": float("inf")}, "finite"),
])
def test_wrong_types_are_refused_naming_the_field(raw: dict[str, Any], words: str) -> None:
    with pytest.raises(RequestError) as err:
        JobSpec.from_dict({"prompts": ["a fox"], **raw})
    assert words in str(err.value)


def test_an_integer_is_accepted_where_a_number_is_expected() -> None:
    spec = JobSpec.from_dict({"prompt": "a fox", "guidance": 5, "fps": 24})
    assert (spec.guidance, spec.fps) == (5.0, 24.0) and isinstance(spec.guidance, float)


def _biggest(char: str = "a") -> dict[str, Any]:
    """Every field at its limit."""
    name = char * (MAX_NAME_BYTES // len(char.encode()))
    path = "/".join([name] * (MAX_PATH_CHARS // (len(name) + 1)))
    return {"prompts": [char * MAX_PROMPT_CHARS] * MAX_PROMPTS, "negative": char * MAX_PROMPT_CHARS,
            "model": "m" * MAX_NAME_BYTES, "encode_preset": "p" * MAX_NAME_BYTES, "output": path, "image": path,
            "upscale_model": path, "preset": "p" * MAX_NAME_BYTES,
            "loras": [f"{i}{char * ((MAX_NAME_BYTES - 2) // len(char.encode()))}:-4:high" for i in range(MAX_LORAS)],
            "tags": {f"{i:0{MAX_TAG_KEY_CHARS}d}": char * MAX_TAG_VALUE_CHARS for i in range(MAX_TAGS)}}


def test_every_field_at_its_limit_is_accepted() -> None:
    JobSpec.from_dict(_biggest())
    JobSpec.from_dict(_biggest("日"))


@pytest.mark.parametrize("field, value, words", [
    ("prompts", ["a" * (MAX_PROMPT_CHARS + 1)], f"prompts[0] is 8,193 characters; the limit is {MAX_PROMPT_CHARS:,}"),
    ("prompts", ["a"] * (MAX_PROMPTS + 1), f"at most {MAX_PROMPTS} prompts"),
    ("negative", "a" * (MAX_PROMPT_CHARS + 1), "negative is 8,193 characters"),
    ("model", "m" * (MAX_NAME_BYTES + 1), f"model is {MAX_NAME_BYTES + 1} characters"),
    ("encode_preset", "p" * (MAX_NAME_BYTES + 1), "encode_preset is"),
    ("output", "o" * (MAX_NAME_BYTES + 1), f"at most {MAX_NAME_BYTES}"),
    ("output", "é" * (MAX_NAME_BYTES // 2 + 1), f"is {MAX_NAME_BYTES + 2} bytes"),
    ("output", "a/" * (MAX_PATH_CHARS // 2 + 1), f"the limit is {MAX_PATH_CHARS}"),
    ("output", "a\nb", "control characters"),
    ("image", "i" * (MAX_NAME_BYTES + 1), "image:"),
    ("upscale_model", "u" * (MAX_NAME_BYTES + 1), "upscale_model:"),
    ("tags", {str(i): "v" for i in range(MAX_TAGS + 1)}, f"at most {MAX_TAGS} tags"),
    ("tags", {"k" * (MAX_TAG_KEY_CHARS + 1): "v"}, f"the limit is {MAX_TAG_KEY_CHARS}"),
    ("tags", {"x": "v" * (10 << 20)}, "tags['x'] is 10,485,760 characters; the limit is 1,024"),
    ("prompts", ["\ud800 fox"], "not valid Unicode"),
])
def test_oversized_fields_are_refused_naming_the_field_and_limit(field: str, value: Any, words: str) -> None:
    with pytest.raises(RequestError) as err:
        JobSpec.from_dict({"prompts": ["a fox"], field: value})
    assert words in str(err.value)


def test_the_largest_legal_job_is_far_below_the_message_limit() -> None:
    # 4-byte characters: the most bytes a legal spec can take on the wire.
    spec = JobSpec.from_dict({**_biggest("🦊"), "model": "m" * MAX_NAME_BYTES})
    job = Job("j" * 32, "failed", spec, outputs=["o" * 1024] * MAX_PROMPTS, sha256=["0" * 64] * MAX_PROMPTS)
    size = job_to_pb(job).ByteSize()
    assert spec_to_pb(spec).ByteSize() < 2 << 20
    # A List page ends after the job that crosses 4 MiB: still far from the limit.
    assert (4 << 20) + size < (MAX_MESSAGE_BYTES + MAX_CONTROL_BYTES) // 4


def test_the_idempotency_key_is_bounded() -> None:
    assert check_idempotency_key("k" * MAX_IDEMPOTENCY_KEY_CHARS)
    with pytest.raises(RequestError, match="idempotency_key"):
        check_idempotency_key("k" * (MAX_IDEMPOTENCY_KEY_CHARS + 1))


def test_a_stored_spec_loads_even_if_the_limits_tightened_since() -> None:
    too_big = JobSpec(prompts=["a fox"], tags={"x": "v" * 5000}).to_json()
    assert JobSpec.from_stored(too_big).tags["x"] == "v" * 5000


def test_loras_in_a_job_file_as_strings_or_tables() -> None:
    raw = tomllib.loads('prompt = "a fox"\nloras = ["ink:0.8:high", "motion", '
                        '{name = "grain", strength = -0.5, expert = "low"}]\nscheduler = "euler"\nshift = 5\n'
                        'boundary_ratio = 0.9\n')
    spec = JobSpec.from_dict(raw)
    assert spec.loras == [LoraRef("ink", 0.8, "high"), LoraRef("motion"), LoraRef("grain", -0.5, "low")]
    assert (spec.scheduler, spec.shift, spec.boundary_ratio) == ("euler", 5.0, 0.9)
    assert spec.to_dict()["loras"] == ["ink:0.8:high", "motion:1:both", "grain:-0.5:low"]
    assert JobSpec.from_json(spec.to_json()) == spec == JobSpec.from_stored(spec.to_json())


@pytest.mark.parametrize("fields, words", [
    ({"loras": "ink"}, "loras must be a list"),
    ({"loras": [3]}, "loras[0] must be"),
    ({"loras": ["ink:strong"]}, "is not a number"),
    ({"loras": ["ink:5"]}, "outside -4.0..4.0"),
    ({"loras": ["ink:1:middle"]}, "expert 'middle'"),
    ({"loras": ["../ink"]}, "without folders"),
    ({"loras": [{"name": "ink", "weight": 1}]}, "a table takes name"),
    ({"loras": ["ink:1:high", "ink:0.5"]}, "named twice for the high-noise expert"),
    ({"loras": [f"l{i}" for i in range(MAX_LORAS + 1)]}, f"at most {MAX_LORAS}"),
    ({"scheduler": "ddim"}, "scheduler 'ddim'"),
    ({"shift": -1.0}, "shift must be within"),
    ({"shift": float("nan")}, "finite"),
    ({"boundary_ratio": 1.0}, "boundary_ratio must be between 0 and 1"),
    ({"preset": "fast preset"}, "preset name"),
])
def test_bad_loras_and_sampling_fields_are_refused(fields: dict[str, Any], words: str) -> None:
    with pytest.raises(RequestError) as err:
        JobSpec.from_dict({"prompt": "a fox", **fields})
    assert words in str(err.value)


def test_loras_scheduler_shift_boundary_and_preset_are_part_of_the_cache_and_batch_keys() -> None:
    base = JobSpec(prompts=["a fox"])
    for change in ({"loras": [LoraRef("ink")]}, {"loras": [LoraRef("ink", 0.5)]}, {"loras": [LoraRef("ink", 1, "low")]},
                   {"scheduler": "euler"}, {"shift": 5.0}, {"boundary_ratio": 0.9}, {"preset": "fast"}):
        other = JobSpec(prompts=["a fox"], **change)  # type: ignore[arg-type]
        assert other.content_key() != base.content_key(), change
        assert other.batch_key() != base.batch_key(), change


def test_the_generate_request_carries_loras_scheduler_shift_and_boundary() -> None:
    spec = JobSpec.from_dict({"prompt": "a fox", "loras": ["ink:0.5:low"], "scheduler": "euler", "shift": 5})
    req = generate_request(spec)
    assert [(r.name, r.strength, r.expert) for r in req.loras] == [("ink", 0.5, "low")]
    assert req.scheduler == "euler" and req.shift == 5.0 and not req.HasField("boundary_ratio")


def test_a_stored_spec_from_before_presets_keeps_its_encoder_preset() -> None:
    old = '{"prompts": ["a fox"], "preset": "slow", "codec": "h264"}'
    spec = JobSpec.from_stored(old)
    assert (spec.encode_preset, spec.preset) == ("slow", "")
    assert post_spec(spec, "out").preset == "slow"


def test_image_data_travels_in_the_spec_and_stays_out_of_jobs_read_back() -> None:
    from artifex_agent.jobspec_pb import spec_from_pb

    plain = JobSpec(prompts=["a"])
    with_image = JobSpec.from_dict({"prompts": ["a"], "image_data": b"\x89PNG fake"})
    assert spec_from_pb(spec_to_pb(with_image)).image_data == b"\x89PNG fake"
    assert JobSpec.from_stored(with_image.to_json()).image_data == b"\x89PNG fake"
    assert JobSpec.from_json(with_image.to_json()).image_data == b"\x89PNG fake"
    # A job without an image keeps the cache key it had before image_data existed.
    assert "image_data" not in plain.to_dict() and plain.content_key() != with_image.content_key()
    assert with_image.content_key() != dataclasses.replace(with_image, image_data=b"other").content_key()
    request = generate_request(with_image)
    assert request.image == b"\x89PNG fake" and request.image_path == "" and request.task == pb.TASK_I2V
    assert not job_to_pb(Job.submitted("j", with_image, 0.0)).spec.HasField("image_data")


def test_image_data_refused_beside_a_path_or_over_the_limit() -> None:
    with pytest.raises(RequestError, match="not both"):
        JobSpec.from_dict({"prompts": ["a"], "image": "x.png", "image_data": b"x"})
    with pytest.raises(RequestError, match="limit"):
        JobSpec.from_dict({"prompts": ["a"], "image_data": b"x" * (MAX_IMAGE_BYTES + 1)})
    with pytest.raises(RequestError, match="base64"):
        JobSpec.from_dict({"prompts": ["a"], "image_data": "not base64!"})

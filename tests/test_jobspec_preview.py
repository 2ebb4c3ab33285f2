"""JobSpec.preview_every: checked, carried to the generating agent, and no part of the output's identity."""

from __future__ import annotations

import pytest

from artifex_agent.jobspec import MAX_PREVIEW_EVERY, JobProblems, JobSpec
from artifex_agent.jobspec_pb import generate_request, spec_from_pb, spec_to_pb


def test_preview_every_travels_to_the_agent_and_back() -> None:
    spec = JobSpec.from_dict({"prompt": "a fox", "preview_every": 2})
    assert spec.preview_every == 2
    assert generate_request(spec).preview_every == 2
    assert spec_from_pb(spec_to_pb(spec)).preview_every == 2
    assert JobSpec.from_json(spec.to_json()).preview_every == 2


def test_previews_change_neither_the_cache_key_nor_a_plain_jobs_json() -> None:
    plain = JobSpec(prompts=["a fox"])
    assert JobSpec(prompts=["a fox"], preview_every=1).content_key() == plain.content_key()
    assert "preview_every" not in plain.to_dict()
    assert generate_request(plain).preview_every == 0


@pytest.mark.parametrize("value", [-1, MAX_PREVIEW_EVERY + 1])
def test_preview_every_out_of_range_is_refused_with_its_name(value: int) -> None:
    with pytest.raises(JobProblems, match="preview_every must be an integer within 0..200"):
        JobSpec.from_dict({"prompt": "a fox", "preview_every": value})
    with pytest.raises(JobProblems, match="field 'preview_every' must be an integer"):
        JobSpec.from_dict({"prompt": "a fox", "preview_every": "2"})

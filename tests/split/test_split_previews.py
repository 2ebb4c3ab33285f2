"""Previews of split jobs: the agent that holds the latents at a step sends its preview; the output is unchanged."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from artifex_agent.engines.previews import preview_size
from artifex_agent.local_cluster import LocalCluster
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from tests.split.test_agents import reference, request, split


def previews_by_agent(duo: LocalCluster, mode: str) -> tuple[dict[str, list[int]], torch.Tensor]:
    seen: dict[str, list[int]] = {"a": [], "b": []}

    def on_progress(agent: str, progress: pb.Progress) -> None:
        if progress.preview:
            assert progress.preview_mime in ("image/webp", "image/jpeg")
            with Image.open(io.BytesIO(progress.preview)) as img:
                assert img.size == preview_size(32, 32, 2)  # 5 frames: 2 latent frames
            seen[agent].append(progress.preview_step)

    req = request(duo, seed=11, steps=6, preview_every=1)
    result = split(duo, req, mode, on_progress=on_progress)
    assert result.ran_on == ("a", "b") and not result.failover
    assert result.output is not None and result.output.latents is not None
    # Previews read the latents, never change them: the same bits as a run without them.
    assert torch.equal(result.output.latents, reference(duo, request(duo, seed=11, steps=6)))
    return seen, result.output.latents


@pytest.mark.slow
def test_an_expert_split_sends_previews_from_whichever_agent_holds_the_latents(duo: LocalCluster) -> None:
    seen, _ = previews_by_agent(duo, "experts")
    # High-noise steps on a, then low-noise steps on b: each sends its first and its last step's
    # (and others, when its steps are slower than the agents' preview rate limit).
    assert seen["a"][0] == 1 and seen["b"][-1] == 6
    assert seen["a"] == sorted(set(seen["a"])) and seen["b"] == sorted(set(seen["b"]))
    assert max(seen["a"]) + 1 == min(seen["b"])  # a's hand-off step, then b's first


@pytest.mark.slow
def test_a_cfg_parallel_job_sends_previews_from_the_conditional_half_only(duo: LocalCluster) -> None:
    seen, _ = previews_by_agent(duo, "cfg")
    assert seen["a"][0] == 1 and seen["a"][-1] == 6 and not seen["b"]

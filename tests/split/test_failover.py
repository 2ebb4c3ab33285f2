"""kill -9 one agent in the middle of a split job: the job runs whole on the other, with the same bits."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from artifex_agent.local_cluster import LocalCluster
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from tests.split.test_agents import reference, request, split

# Each kills an agent mid-split and restarts it.
pytestmark = pytest.mark.slow


def killer(cluster: LocalCluster, victim: str, at_step: int) -> tuple[Callable[[str, pb.Progress], None], list[int]]:
    """A progress callback that kill -9s `victim` once it reports denoising step `at_step`."""
    killed: list[int] = []

    def on_progress(agent: str, p: pb.Progress) -> None:
        if agent == victim and p.current_stage == pb.STAGE_DENOISE and p.step >= at_step and not killed:
            cluster.children[victim].kill()
            killed.append(p.step)

    return on_progress, killed


@pytest.mark.parametrize("mode, victim, at_step", [
    ("experts", "a", 2),   # during the high-noise steps, before any hand-off
    ("experts", "b", 22),  # during the low-noise steps (21..40), after the hand-off
    ("cfg", "b", 3),       # the unconditional half
])
def test_a_dead_agent_mid_split_fails_over_to_a_whole_job(duo: LocalCluster, mode: str, victim: str,
                                                          at_step: int) -> None:
    req = request(duo, seed=40 + at_step, steps=40, guidance_scale=4.0, guidance_scale_2=3.0)
    ref = reference(duo, req)
    on_progress, killed = killer(duo, victim, at_step)
    survivor = "b" if victim == "a" else "a"
    try:
        result = split(duo, req, mode, on_progress=on_progress, stop_step=20 if mode == "experts" else 0)
    finally:
        if duo.children[victim].proc.poll() is not None:  # type: ignore[union-attr]
            duo.start_agent(victim)
    assert killed, f"{victim} finished before it could be killed"
    assert killed[0] < 40
    assert result.ran_on == (survivor,)
    assert result.failover.startswith(f"{victim} lost") and survivor in result.failover
    assert result.output is not None and torch.equal(result.output.latents, ref)  # type: ignore[arg-type]

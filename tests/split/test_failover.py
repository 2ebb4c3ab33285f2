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


def killer(cluster: LocalCluster, victim: str, when: Callable[[str, pb.Progress], bool]
           ) -> tuple[Callable[[str, pb.Progress], None], list[int]]:
    """A progress callback that kill -9s `victim` at the first event `when` picks (its stage is noted)."""
    killed: list[int] = []

    def on_progress(agent: str, p: pb.Progress) -> None:
        if not killed and when(agent, p):
            cluster.children[victim].kill()
            killed.append(p.current_stage)

    return on_progress, killed


# Points the victim cannot have passed when the client sees them. An agent's progress reaches
# the client late on a loaded machine: an expert's steps wait for nothing, so by the time the
# client read "a: step 2" agent a had often sent its whole hand-off, and b its output, and the
# kill came too late to matter (a failing run in two, under load).
WHEN: dict[str, Callable[[str, pb.Progress], bool]] = {
    # Before agent a's first step: the client announces the split before it opens any call.
    "before a's steps": lambda agent, p: p.current_stage == pb.STAGE_SPLIT,
    # Agent b accepted the hand-off's header and waits for its tensors, which the client holds back until now.
    "b holds the hand-off header": lambda agent, p: agent == "b" and p.current_stage == pb.STAGE_ACCEPTED,
    # The two CFG halves step in lockstep through the client: b cannot run ahead of its peer.
    "b at step 3": lambda agent, p: agent == "b" and p.current_stage == pb.STAGE_DENOISE and p.step >= 3,
}


@pytest.mark.parametrize("mode, victim, when", [
    ("experts", "a", "before a's steps"),
    ("experts", "b", "b holds the hand-off header"),
    ("cfg", "b", "b at step 3"),  # the unconditional half
])
def test_a_dead_agent_mid_split_fails_over_to_a_whole_job(duo: LocalCluster, mode: str, victim: str,
                                                          when: str) -> None:
    req = request(duo, seed=42, steps=40, guidance_scale=4.0, guidance_scale_2=3.0)
    ref = reference(duo, req)
    on_progress, killed = killer(duo, victim, WHEN[when])
    survivor = "b" if victim == "a" else "a"
    try:
        result = split(duo, req, mode, on_progress=on_progress, stop_step=20 if mode == "experts" else 0)
    finally:
        if duo.children[victim].proc.poll() is not None:  # type: ignore[union-attr]
            duo.start_agent(victim)
    assert killed, f"{victim} finished before it could be killed"
    assert result.ran_on == (survivor,)
    assert result.failover.startswith(f"{victim} lost") and survivor in result.failover
    assert result.output is not None and torch.equal(result.output.latents, ref)  # type: ignore[arg-type]

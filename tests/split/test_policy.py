"""`--split auto`: the mode the coordinator picks for a job."""

from __future__ import annotations

import pytest

from artifex_agent.split.policy import choose_split


@pytest.mark.parametrize("kw, mode", [
    ({"queue_depth": 1}, "cfg"),                                 # alone: latency, both passes at once
    ({"queue_depth": 1, "guidance": 1.0}, "none"),               # alone without guidance: nothing to split
    ({"queue_depth": 5}, "experts"),                             # a queue: pipelined stages
    ({"queue_depth": 5, "urgent": True}, "cfg"),                 # an urgent job jumps to latency
    ({"queue_depth": 5, "two_experts": False}, "none"),          # one-expert model: whole jobs on both
    ({"queue_depth": 1, "two_experts": False}, "cfg"),
    ({"queue_depth": 5, "generators": 1}, "none"),               # one PC
    ({"queue_depth": 1, "image_to_video": True}, "none"),        # i2v runs whole
])
def test_choose_split(kw: dict, mode: str) -> None:
    args = {"two_experts": True, "guidance": 4.0, "queue_depth": 1, "generators": 2, **kw}
    choice = choose_split(**args)
    assert choice.mode == mode and choice.reason

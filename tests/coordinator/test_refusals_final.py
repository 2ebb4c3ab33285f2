"""Refusals are final: a job the agents refuse fails at once, with the agent's status, after one attempt."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from artifex_agent.coordinator.retry import REFUSALS, classify
from artifex_agent.split.streams import AgentLost
from artifex_agent.transport.post_call import RemoteError
from tests.coordinator.conftest import Coordinator, spec


def test_a_missing_upscale_model_fails_the_job_at_once_with_not_found(coordinator: Coordinator) -> None:
    with coordinator.client() as client:
        coordinator.wait_for_agents(client)
        job = client.wait(client.submit(spec("a missing model", seed=21, upscale=2,
                                             upscale_model="nope.safetensors")), timeout=60)
        assert job.state == "failed", job
        assert "NOT_FOUND" in job.error and "nope.safetensors" in job.error, job.error
        assert job.attempts == 1
        states = [e.state for e in client.watch(job.id, history=True) if e.kind == "state"]
        assert states.count("queued") == 1, states  # never put back in the queue


@pytest.mark.parametrize("code", sorted(REFUSALS, key=lambda c: c.name))
def test_refusals_are_never_retried(code: grpc.StatusCode) -> None:
    message, retry, dead = classify(RemoteError("b", code, "no"))
    assert not retry and not dead and code.name in message


@pytest.mark.parametrize("error,dead", [
    (RemoteError("b", grpc.StatusCode.UNAVAILABLE, "gone"), "b"),
    (AgentLost("b", grpc.StatusCode.INTERNAL, "broke"), ""),
    (RemoteError("b", grpc.StatusCode.RESOURCE_EXHAUSTED, "busy"), ""),
    (RemoteError("b", grpc.StatusCode.DEADLINE_EXCEEDED, "slow"), ""),
])
def test_availability_failures_and_broken_agents_are_retried(error: Any, dead: str) -> None:
    _, retry, dead_agent = classify(error)
    assert retry and dead_agent == dead

"""Which agent generates, and which post-processes: affinity as a preference, load and health as facts."""

from __future__ import annotations

from collections.abc import Iterable

from artifex_agent.coordinator.agents import AgentHandle
from artifex_agent.jobspec import JobSpec


def idle_generators(agents: Iterable[AgentHandle]) -> list[AgentHandle]:
    """Agents that are up, may generate and are not generating now; generation-preferring first."""
    free = [a for a in agents if a.up and "generate" in a.cfg.roles and a.generating == 0]
    # An agent that prefers post-processing generates only when it has nothing to post:
    # its preference decides who takes a job when both are free.
    return sorted(free, key=lambda a: (not a.prefers("generate"), a.posting, a.name))


def choose_post(agents: Iterable[AgentHandle], spec: JobSpec, generator: AgentHandle,
                previous: str = "") -> AgentHandle | None:
    """The agent that post-processes a job generated on `generator`, or None when none can.

    A post-preferring agent that is idle takes it; otherwise the least busy capable agent,
    the generating one on a tie (its own output follows its own generation, so two
    generating agents each post their own jobs and neither starves the other's CPU/GPU).
    A retry goes back to the agent of the previous attempt when it can, so a re-run
    overwrites the same output file instead of leaving a second one elsewhere.
    """
    agents = list(agents)
    if any(a.name == previous and not a.checked for a in agents):
        # The coordinator has just started and not yet heard from it: wait for its first health
        # check rather than send the re-run elsewhere and leave the earlier attempt's file behind.
        return None
    capable = [a for a in agents if a.can_post(spec)]
    if not capable:
        return None
    for a in capable:
        if previous and a.name == previous:
            return a
    for a in capable:
        if a.prefers("post") and a.idle and a is not generator:
            return a
    # Called before `generator` counts the new job, so its load is what it does besides.
    return min(capable, key=lambda a: (a.posting + a.generating, a is not generator, not a.prefers("post"), a.name))

"""Why a queued job has not started yet, in the words `jobs` and `submit --wait` show, and when it should.

The scheduler asks after every dispatch, for the jobs still queued. Each answer is a reason
and, where the coordinator knows it, the time the job should start (a batch's deadline, a
retry's backoff); behind busy agents it does not guess.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from artifex_agent.coordinator import post_runs, split_runs
from artifex_agent.coordinator.agents import AgentHandle
from artifex_agent.coordinator.batching import QueueEntry


class Run(Protocol):
    """What this module reads of a run in flight (run.Run)."""

    entries: list[QueueEntry]
    gen: AgentHandle
    post: AgentHandle
    gen_released: bool
    posting: bool


@dataclass(frozen=True)
class Wait:
    """A reason to wait; `expected` is when the job should start (wall clock), None when unknown."""

    reason: str
    expected: float | None = None
    # What a watcher is told again when it changes: the reason less what moves on its own (jobs ahead).
    key: str = ""


def explain(queued: Sequence[QueueEntry], agents: Sequence[AgentHandle], runs: Iterable[Run], *,
            batch_size: int, batch_timeout_s: float, now: float) -> dict[str, Wait]:
    """Job id -> why it waits, for `queued` (queue order, queued jobs only)."""
    runs = list(runs)
    # An identical job running or earlier in the queue fills the results cache for this one.
    first_with: dict[str, str] = {e.content_key: e.job.id for run in runs for e in run.entries}
    groups: dict[tuple[object, ...], list[QueueEntry]] = {}
    for entry in queued:
        if entry.not_before <= now and first_with.setdefault(entry.content_key, entry.job.id) == entry.job.id:
            groups.setdefault(entry.batch_key, []).append(entry)
    out: dict[str, Wait] = {}
    ahead = 0
    for entry in queued:
        job = entry.job
        if entry.not_before > now:
            out[job.id] = Wait(f"waiting to retry (attempt {job.attempts + 1}) after: {job.error}",
                               entry.not_before, "retry")
            continue
        twin = first_with[entry.content_key]
        if twin != job.id:
            out[job.id] = Wait(f"waiting for job {twin}, an identical job: its result is reused", None, f"twin {twin}")
            continue
        out[job.id] = _for_agents(entry, agents, runs, groups[entry.batch_key], ahead,
                                  batch_size=batch_size, batch_timeout_s=batch_timeout_s)
        ahead += 1
    return out


def _for_agents(entry: QueueEntry, agents: Sequence[AgentHandle], runs: list[Run], group: list[QueueEntry],
                ahead: int, *, batch_size: int, batch_timeout_s: float) -> Wait:
    spec = entry.job.spec
    if post_runs.is_post_only(spec):
        able = [a for a in agents if a.can_post(spec)]
        free = [a for a in able if a.idle]
    else:
        able = [a for a in agents if a.can_generate(spec)] if any(a.can_post(spec) for a in agents) else []
        free = [a for a in able if a.generating == 0]
        if split_runs.is_split(spec) and len(free) < 2:
            free = []  # a split job holds two agents
    if not able:
        why = "; ".join(_unable(a, spec.model, post_runs.is_post_only(spec)) for a in agents) or "no agents"
        return Wait(f"waiting for an agent able to run it ({why})", None, "unable " + why)
    if free and batch_timeout_s > 0 and entry.priority <= 0 and len(group) < batch_size:
        due = min(e.queued_at for e in group) + batch_timeout_s
        return Wait(f"waiting for a batch of {batch_size} ({len(group)} queued)", due, "batch")
    if free:
        return Wait("starting", None, "starting")
    busy = ", ".join(_doing(a, runs) for a in able)
    behind = f"; {ahead} job{'s' if ahead != 1 else ''} ahead" if ahead else ""
    # Told again when other agents are in the way, not at every job they move on to.
    return Wait(f"waiting for a free agent: {busy}{behind}", None, "busy " + " ".join(a.name for a in able))


def _unable(agent: AgentHandle, model: str, post_only: bool) -> str:
    if not agent.up:
        return f"{agent.name} is down"
    role = "post" if post_only else "generate"
    if role not in agent.cfg.roles:
        return f"{agent.name} does not {'post-process' if post_only else 'generate'}"
    if not post_only and not agent.has_model(model):
        return f"{agent.name} does not have {model}"
    if not post_only and not agent.holds(model):
        return f"{agent.name}'s GPU cannot hold {model}"
    return f"{agent.name} cannot encode it"


def _doing(agent: AgentHandle, runs: list[Run]) -> str:
    """What an agent is busy with: "a is generating job X", "b is post-processing jobs Y, Z"."""
    generating = [e.job.id for r in runs if r.gen is agent and (not r.gen_released or not r.posting)
                  for e in r.entries]
    posting = [e.job.id for r in runs if r.post is agent and r.posting for e in r.entries]
    said = [f"{verb} job{'s' if len(ids) > 1 else ''} {', '.join(ids)}"
            for verb, ids in (("generating", generating), ("post-processing", posting)) if ids]
    return f"{agent.name} is {' and '.join(said)}" if said else f"{agent.name} is busy"

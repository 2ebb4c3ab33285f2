"""Split and decode-on-post jobs at the coordinator: one job, one Deliver, up to two generating agents.

Such a job never shares a batch: it holds both agents for its whole duration (the expert
hand-off or the per-step CFG exchange keeps both busy). The coordinator sends one Deliver
to the agent whose half makes the output, naming the other as its peer (delivery/split.py):
the hand-off, the noise predictions and the frames go between the agents, never through
here. Progress maps to the job's events like any run's; the result or failure is recorded
by the scheduler as any run's (run_ends.py), and a post stage that failed while the frames stay
held is retried from them (held_retry.py). A peer lost mid-job makes the output agent run
the whole job itself; the output agent lost fails the attempt, which is retried like any.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from artifex_agent.coordinator import routing
from artifex_agent.coordinator.agents import AgentHandle, AgentPool
from artifex_agent.coordinator.batching import QueueEntry
from artifex_agent.coordinator.held_retry import HeldRetries
from artifex_agent.coordinator.links import LinkMatrix
from artifex_agent.coordinator.pipeline import run_batch
from artifex_agent.jobspec import JobSpec
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb

if TYPE_CHECKING:
    from artifex_agent.split.client import Mode

logger = logging.getLogger(__name__)


class Host(Protocol):
    """What these runs use of the scheduler (coordinator/scheduler.py, which imports this module)."""

    pool: AgentPool
    entries: dict[str, QueueEntry]
    held_retries: HeldRetries

    async def begin_one(self, entry: QueueEntry, gen: AgentHandle, post: AgentHandle, where: str) -> Any: ...
    def launch(self, run: Any, work: Callable[[Any], Awaitable[list[Any]]], name: str,
               after: Callable[[], None] | None = None) -> None: ...
    def publish_info(self, run: Any, message: str) -> None: ...
    def progress(self, run: Any, index: int | None, source: str, p: pb.Progress) -> None: ...


def is_split(spec: JobSpec) -> bool:
    """Whether the job runs through the split client (split across two agents, or latents decoded by the post agent)."""
    return spec.split != "none" or spec.decode_on == "post"


def resolve_mode(spec: JobSpec, agents: Iterable[AgentHandle], queue_depth: int) -> Mode:
    """experts/cfg as asked; auto by split/policy.py from what the coordinator knows now."""
    if spec.split != "auto":
        return spec.split  # type: ignore[return-value]
    from artifex_agent.split.policy import choose_split  # split/ imports torch: only when a split job comes

    generators = [a for a in agents if a.can_generate(spec)]
    two_experts = any(m.name == spec.model and m.two_experts for a in generators if a.info for m in a.info.models)
    return choose_split(two_experts=two_experts, guidance=spec.guidance, queue_depth=queue_depth,
                        generators=len(generators), image_to_video=spec.i2v).mode


def best_pair(free: list[AgentHandle], links: LinkMatrix | None) -> tuple[AgentHandle, AgentHandle] | None:
    """The two of `free` (in routing order) with the fastest healthy link (LinkMatrix.rank), then the most free VRAM.

    A pair whose last probe failed is never chosen; one not measured yet ranks after the measured
    ones (so two agents, the only pair, split as before). The pair keeps routing order inside.
    """
    links = links or LinkMatrix()
    pairs = [(a, b) for i, a in enumerate(free) for b in free[i + 1:] if links.usable(a.name, b.name)]
    if not pairs:
        return None
    order = {a.name: i for i, a in enumerate(free)}
    return min(pairs, key=lambda p: (links.rank(p[0].name, p[1].name),
                                     -min(p[0].free_vram_bytes, p[1].free_vram_bytes),
                                     order[p[0].name] + order[p[1].name]))


def choose_agents(agents: list[AgentHandle], spec: JobSpec, mode: Mode, previous_post: str = "",
                  links: LinkMatrix | None = None) -> tuple[AgentHandle, AgentHandle, AgentHandle] | None:
    """(generate_on, other, post_on) for the job, all idle and able; None while they are not.

    experts/cfg need two different generating agents (the best pair: links.py), the second also
    post-processing when it can (as in direct mode); a decode-on-post job alone needs one
    generator and a post agent.
    """
    free = [a for a in routing.idle_generators(agents) if a.idle and a.can_generate(spec)]
    if not free:
        return None
    first = free[0]
    if spec.decode_on == "post":
        # The post agent decodes the latents with the model's own VAE: it must hold the model.
        agents = [a for a in agents if a.has_model(spec.model)]
    if mode == "none":
        post = routing.choose_post(agents, spec, first, previous_post)
        return None if post is None or (post is not first and not post.idle) else (first, first, post)
    chosen = best_pair(free, links)
    if chosen is None:
        return None
    first, other = chosen
    post = other if other.can_post(spec) else routing.choose_post(agents, spec, other, previous_post)
    if post is None or (post is not first and post is not other and not post.idle):
        return None
    return first, other, post


async def start(sched: Host, entry: QueueEntry) -> bool:
    """Start the split job when its agents are free; False: it runs as an ordinary job (auto chose whole)."""
    spec = entry.job.spec
    if sched.held_retries.pending(entry.job.id):
        return False  # its frames are held: only the post stage runs again (the scheduler's held retries)
    mode = resolve_mode(spec, sched.pool, len(sched.entries))
    if mode != "none" and best_pair([a for a in sched.pool if a.can_generate(spec)], sched.pool.links) is None:
        # One agent left able to generate, or no healthy link between any two: the job runs whole
        # rather than wait (as the split client's failover).
        mode = "none"
    if mode == "none" and spec.decode_on != "post":
        return False
    chosen = choose_agents(list(sched.pool), spec, mode, entry.job.post_agent, sched.pool.links)
    if chosen is None:
        return True  # waits for its agents
    first, second, post = chosen
    # The Deliver goes to the agent whose half makes the output: the low-noise expert, or CFG's conditional half.
    gen, other = (second, first) if mode == "experts" else (first, second)
    run = await sched.begin_one(entry, gen, post, describe(mode, first, second, post, spec))
    if run is None:
        return True  # cancelled while it was being recorded
    # Both agents count as generating for the whole run (the scheduler's own release at "stream" is skipped).
    held = (gen, other, post)
    busy(held, +1)
    run.gen_released = True
    sched.launch(run, lambda r: work(sched, r, other, mode), f"split-{entry.job.id}", after=lambda: busy(held, -1))
    return True


def busy(agents: Iterable[AgentHandle], delta: int) -> None:
    """Mark each agent of a split run generating (+1) or free again (-1): none takes other work meanwhile."""
    for agent in {a.name: a for a in agents}.values():
        agent.generating += delta


async def work(sched: Host, run: Any, other: AgentHandle, mode: Mode) -> list[Any]:
    """The split run: one Deliver to the agent that makes the output, which drives the other agent itself.

    Frames, latents and hand-offs go between the agents; only progress and the result come here.
    """
    job = run.entries[0].job
    split = None
    if mode != "none":
        # run.gen makes the output (the low-noise expert, or the conditional half of CFG); `other` is its peer.
        split = pb.SplitPlan(mode=mode, peer=other.name)

    def on_progress(index: int | None, source: str, p: pb.Progress) -> None:
        if p.current_stage in (pb.STAGE_SPLIT, pb.STAGE_FAILOVER):
            sched.publish_info(run, p.message)
        sched.progress(run, index, source, p)

    return await run_batch(run.gen.stub, [job], job.id, on_progress, gen_name=run.gen.name, post_name=run.post.name,
                           split=split)


def describe(mode: Mode, first: AgentHandle, second: AgentHandle, post: AgentHandle, spec: JobSpec) -> str:
    """The attempt's event message (experts: high-noise steps on `first`; cfg: conditional passes on `first`)."""
    if mode == "none":
        where = f"generating on {first.name}"
    else:
        where = f"split {mode!r} on {first.name} + {second.name}"
    where += f", post-processing on {post.name}"
    if spec.decode_on == "post":
        where += " (latents decoded there)"
    return where

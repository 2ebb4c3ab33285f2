"""The agents named in the cluster file: channels, continuous health checks, capabilities and load."""

from __future__ import annotations

import asyncio
import difflib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from artifex_agent import PROTOCOL_VERSION
from artifex_agent.config import AgentConfig, ClusterConfig
from artifex_agent.coordinator.links import BANDWIDTH_SECONDS, PROBE_ECHOES, LinkMatrix
from artifex_agent.engines.models import SizeRules
from artifex_agent.jobspec import JobSpec
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.transport.channel import AgentStub, open_channel
from artifex_agent.transport.security import call_metadata
from artifex_agent.vocabulary import CODECS, encoders_for

logger = logging.getLogger(__name__)

# Info (models, encoders) is fetched when an agent comes up, then refreshed this often.
INFO_REFRESH_S = 30.0
# Each pair of agents is probed at most once per this many health intervals per agent (links.py).
LINK_EVERY_INTERVALS = 5


@dataclass
class AgentHandle:
    """One agent as the coordinator sees it."""

    cfg: AgentConfig
    stub: AgentStub
    channel: grpc.aio.Channel
    up: bool = False
    checked: bool = False
    info: pb.AgentInfo | None = None
    info_time: float = 0.0
    problem: str = ""
    generating: int = 0
    posting: int = 0
    since: float = field(default_factory=time.monotonic)

    @property
    def name(self) -> str:
        return self.cfg.name

    def prefers(self, stage: str) -> bool:
        return stage in self.cfg.prefer

    @property
    def idle(self) -> bool:
        return self.generating == 0 and self.posting == 0

    def has_model(self, model: str) -> bool:
        """True when the agent lists `model` complete (or has not said what it has yet)."""
        if self.info is None:
            return True
        return any(m.name == model and m.complete for m in self.info.models)

    def holds(self, model: str) -> bool:
        """False when the agent said its GPU cannot hold `model` (an A14B expert on a 12 GB card)."""
        if self.info is None:
            return True
        return not any(m.name == model and m.cannot_hold for m in self.info.models)

    @property
    def free_vram_bytes(self) -> int:
        """GPU memory free on the agent's first card at its last Info (0: no GPU, or not known)."""
        if self.info is None or not self.info.gpus:
            return 0
        gpu = self.info.gpus[0]
        return max(gpu.memory_total - gpu.memory_used, 0)

    def can_generate(self, spec: JobSpec) -> bool:
        return self.up and "generate" in self.cfg.roles and self.has_model(spec.model) and self.holds(spec.model)

    def can_post(self, spec: JobSpec) -> bool:
        if not (self.up and "post" in self.cfg.roles):
            return False
        if self.info is None or not self.info.encoders:
            return True
        return any(e in self.info.encoders for e in encoders_for(spec.codec, spec.encoder))


class AgentPool:
    """Keeps a handle per configured agent up to date; calls `on_change` when one comes or goes."""

    def __init__(self, cluster: ClusterConfig, interval_s: float = 1.0,
                 on_change: Callable[[], None] | None = None) -> None:
        self.cluster = cluster
        self.interval_s = interval_s
        self.on_change = on_change or (lambda: None)
        self.token = cluster.security.secrets.token
        self.agents: dict[str, AgentHandle] = {}
        # Agents taken out of the cluster file: their running stages finish on their open channels.
        self.retired: list[AgentHandle] = []
        self.links = LinkMatrix()
        self._task: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None

    async def start(self) -> None:
        for cfg in self.cluster.agents:
            self._add(cfg)
        self._task = asyncio.create_task(self._loop(), name="agent-health")

    def _add(self, cfg: AgentConfig) -> AgentHandle:
        channel = open_channel(cfg.dial_address, self.cluster.security)
        agent = self.agents[cfg.name] = AgentHandle(cfg, AgentStub(channel, self.token), channel)
        return agent

    def reload(self, agents: list[AgentConfig]) -> tuple[list[str], list[str]]:
        """Take the cluster file's [agents.*] as they are now: (added, removed) names.

        A new agent gets a handle (work reaches it after its first health check); a removed one gets
        nothing new and is dropped as if it went down, its running stages finishing on its channel
        (closed once it is idle); one whose settings changed keeps its handle and its load unless
        its address changed, which counts as removed and added.
        """
        wanted = {cfg.name: cfg for cfg in agents}
        added, removed = [], []
        for name, agent in list(self.agents.items()):
            cfg = wanted.get(name)
            if cfg is not None and cfg.dial_address == agent.cfg.dial_address:
                agent.cfg = cfg
                continue
            del self.agents[name]
            self.links.forget(name)
            self.retired.append(agent)
            removed.append(name)
            if agent.up:
                agent.up, agent.problem = False, "removed from the cluster file"
        for name, cfg in wanted.items():
            if name not in self.agents:
                self._add(cfg)
                added.append(name)
        self.cluster.agents = list(agents)
        if added or removed:
            logger.info("agents reloaded: %s added, %s removed", ", ".join(added) or "none",
                        ", ".join(removed) or "none")
            self.on_change()
        return added, removed

    async def close(self) -> None:
        for task in (self._task, self._probe):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for agent in [*self.agents.values(), *self.retired]:
            await agent.channel.close()

    def __iter__(self) -> Iterator[AgentHandle]:
        return iter(self.agents.values())

    def up(self) -> list[AgentHandle]:
        return [a for a in self.agents.values() if a.up]

    def view(self) -> tuple[dict[str, bool], dict[tuple[str, str], float]]:
        """Every agent up or not, and every measured link's RTT in seconds (the coordinator's metrics)."""
        # Read from the metrics server's thread: copy each dict in one step before walking it.
        return ({a.name: a.up for a in list(self.agents.values())},
                {k: link.rtt_ms / 1000 for k, link in list(self.links.links.items())})

    def size_rules(self, model: str) -> SizeRules | None:
        """The size rules an agent read from `model`'s configs (None: no agent has said, or an older agent)."""
        for agent in self.agents.values():
            for m in agent.info.models if agent.info is not None else ():
                if m.name == model and m.complete and m.size_multiple:
                    return SizeRules(spatial=m.size_multiple, temporal=m.frame_step or 4,
                                     max_positions=m.max_positions or 1024)
        return None

    def job_problems(self, spec: JobSpec) -> list[str]:
        """Why no agent in the cluster could run `spec`: a model none has (or of the wrong kind), a codec none writes.

        Judged only when every agent of the role has said what it holds: one not heard from yet (a
        coordinator started before its agents) may have it, and then the job queues, as it always did.
        """
        problems = []
        generators = [a for a in self if "generate" in a.cfg.roles]
        if not spec.post_input and generators and all(a.info is not None for a in generators):
            problems += _model_problems(spec, [m for a in generators for m in a.info.models])  # type: ignore[union-attr]
            having = [a for a in generators if a.has_model(spec.model)]
            if not problems and having and not any(a.holds(spec.model) for a in having):
                need = max(m.hold_bytes for a in having for m in a.info.models  # type: ignore[union-attr]
                           if m.name == spec.model)
                problems.append(f"model {spec.model!r} needs about {need / 2**30:.1f} GiB of GPU memory with one "
                                f"expert resident; no generating agent can hold it "
                                f"({', '.join(a.name for a in having)} said so): add a larger GPU or a GGUF expert")
        posters = [a for a in self if "post" in a.cfg.roles]
        if posters and all(a.info is not None and a.info.encoders for a in posters) \
                and spec.codec in CODECS:  # an unknown codec is JobSpec.validate's to report
            wanted = encoders_for(spec.codec, spec.encoder)
            have = sorted({e for a in posters for e in a.info.encoders})  # type: ignore[union-attr]
            if not set(wanted) & set(have):
                problems.append(f"codec {spec.codec!r} with encoder {spec.encoder!r} needs {' or '.join(wanted)}; "
                                f"no post agent has it (they have: {', '.join(have)})")
        return problems

    def mark_down(self, name: str, reason: str) -> None:
        """A call failed as if the agent were gone: send it nothing until a health check says otherwise."""
        agent = self.agents.get(name)
        if agent is not None and agent.up:
            self._set(agent, False, reason)

    async def _loop(self) -> None:
        while True:
            await asyncio.gather(*(self.check(a) for a in self.agents.values()))
            await self._close_retired()
            self._probe_a_pair()
            await asyncio.sleep(self.interval_s)

    async def _close_retired(self) -> None:
        for agent in [a for a in self.retired if a.idle]:
            self.retired.remove(agent)
            await agent.channel.close()

    def _probe_a_pair(self) -> None:
        """Start measuring the stalest pair of agents that are up, one probe at a time (bounded, cheap)."""
        if self._probe is not None and not self._probe.done():
            return
        up = {a.name: a for a in self.up()}
        every = self.interval_s * LINK_EVERY_INTERVALS * max(len(self.agents), 1)
        chosen = self.links.stalest(up, every)
        if chosen is not None:
            self.links.ask(*chosen)
            # With two agents there is no pair to choose: only echoes cross their link, never a stream.
            stream = len(up) > 2 and self.links.bandwidth_due(*chosen)
            self._probe = asyncio.create_task(self.measure_link(up[chosen[0]], up[chosen[1]], stream),
                                              name="link-probe")

    async def measure_link(self, a: AgentHandle, b: AgentHandle, bandwidth: bool = False) -> None:
        """Have `a` probe `b` with a few echoes (and a moment's stream each way) and keep the result; never raises."""
        seconds = BANDWIDTH_SECONDS if bandwidth else 0.0
        timeout = 5.0 + PROBE_ECHOES * 0.01 + 3 * seconds
        request = pb.ProbeRequest(address=b.cfg.dial_address, echo_count=PROBE_ECHOES, timeout_s=timeout,
                                  bandwidth_seconds=seconds)
        try:
            result = await a.stub.probe(request, timeout=timeout + 2)
        except grpc.aio.AioRpcError as exc:
            # `a` itself did not answer (down, or an older agent without Probe): that says nothing of the link.
            logger.debug("link probe %s -> %s: %s", a.name, b.name, exc.code().name)
            return
        except Exception:
            logger.exception("link probe %s -> %s failed", a.name, b.name)
            return
        was = self.links.get(a.name, b.name)
        link = self.links.record(a.name, b.name, result)
        if was is None or was.ok != link.ok:
            if link.ok:
                gbit = f", {link.gbit:.2f} Gbit/s" if link.gbit else ""
                logger.info("link %s <-> %s: RTT p50 %.3f ms%s", a.name, b.name, link.rtt_ms, gbit)
            else:
                logger.warning("link %s <-> %s is unhealthy: %s", a.name, b.name, link.error)

    async def check(self, agent: AgentHandle) -> None:
        """One health check (and an Info when due); never raises."""
        stub = health_pb2_grpc.HealthStub(agent.channel)
        timeout = max(self.interval_s, 1.0)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout,
                                     metadata=call_metadata(self.token))
            serving = reply.status == health_pb2.HealthCheckResponse.SERVING
            problem = "" if serving else health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            if serving and (not agent.up or time.monotonic() - agent.info_time > INFO_REFRESH_S):
                problem = await self._refresh_info(agent, timeout)
                serving = not problem
        except grpc.aio.AioRpcError as exc:
            serving, problem = False, f"{exc.code().name}: {exc.details() or ''}".strip()
        except Exception as exc:  # a health check must never take the loop down
            logger.exception("health check of %s failed", agent.name)
            serving, problem = False, type(exc).__name__
        first, agent.checked = not agent.checked, True
        if serving != agent.up:
            self._set(agent, serving, problem)
        elif first:
            self.on_change()  # down from the start: jobs waiting to hear of it (routing.choose_post) move on
        agent.problem = problem

    async def _refresh_info(self, agent: AgentHandle, timeout: float) -> str:
        """Fetch Info; a peer speaking another protocol is refused (returns why)."""
        info = await agent.stub.info(timeout=timeout)
        agent.info, agent.info_time = info, time.monotonic()
        if info.protocol_version and info.protocol_version != PROTOCOL_VERSION:
            return f"speaks protocol {info.protocol_version}, the coordinator {PROTOCOL_VERSION}"
        return ""

    def _set(self, agent: AgentHandle, up: bool, reason: str) -> None:
        agent.up, agent.since = up, time.monotonic()
        agent.problem = reason
        if up:
            self.links.forget(agent.name)  # measured afresh; meanwhile its pairs count as usable
            models = ", ".join(m.name for m in agent.info.models if m.complete) if agent.info else "?"
            logger.info("agent %s is up (%s; models: %s)", agent.name, agent.cfg.dial_address, models or "none")
        else:
            logger.warning("agent %s is down: %s", agent.name, reason or "not serving")
        self.on_change()


def _model_problems(spec: JobSpec, listed: list[pb.ModelInfo]) -> list[str]:
    """Why none of the generating agents' models can run `spec` (empty when one can), naming those that could."""
    video = [m for m in listed if m.complete and m.model_kind != pb.MODEL_KIND_UPSCALE]
    kinds = {m.model_kind for m in video if m.name == spec.model}
    if not kinds:
        have = sorted({m.name for m in video})
        close = difflib.get_close_matches(spec.model, have, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return [f"model {spec.model!r} is on no agent ({hint}they have: {', '.join(have) or 'nothing'})"]
    takes = {pb.MODEL_KIND_T2V: "text-to-video", pb.MODEL_KIND_I2V: "image-to-video"}
    wrong = pb.MODEL_KIND_T2V if spec.i2v else pb.MODEL_KIND_I2V
    if kinds == {wrong}:
        others = sorted({m.name for m in video if m.model_kind not in (wrong, pb.MODEL_KIND_UNSPECIFIED)})
        need = "drop the image" if spec.i2v else "give an image (image or image_data)"
        return [f"model {spec.model!r} is {takes[wrong]}: {need}, or use {' or '.join(others) or 'another model'}"]
    return []

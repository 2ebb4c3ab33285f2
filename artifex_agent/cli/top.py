"""`artifex-agent top`: a live dashboard of every agent (GPU, VRAM, streams, throughput) and the queue."""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from artifex_agent.cli.options import add_config, add_state_dir, env, state_dir
from artifex_agent.config import ClusterConfig, split_hostport
from artifex_agent.errors import ExitCode
from artifex_agent.metrics import metrics_url, scrape, total
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.transport.channel import AgentStub, open_channel

GIB = 1 << 30


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "top", help="live dashboard of both PCs: GPU load, VRAM, temperature, streams, throughput, queue",
        description="Polls every agent's Diagnostics.Info (and its Prometheus endpoint when metrics_port is "
                    "set, for frame and byte rates; the coordinator's for queue depth). Ctrl+C quits.")
    add_config(p)
    add_state_dir(p)
    p.add_argument("--interval", type=float, default=env("--interval", 2.0), help="seconds between refreshes")
    p.add_argument("--once", action="store_true", help="print one snapshot and exit (no live screen)")


@dataclass
class AgentView:
    """What one refresh learned about one agent."""

    name: str
    address: str
    info: pb.AgentInfo | None = None
    error: str = ""
    samples: dict[Any, float] = field(default_factory=dict)
    at: float = 0.0


@dataclass
class Snapshot:
    agents: list[AgentView]
    queue: dict[str, float] | None
    queue_error: str = ""
    at: float = field(default_factory=time.monotonic)


class Poller:
    """Keeps one channel per agent open across refreshes."""

    def __init__(self, cluster: ClusterConfig) -> None:
        self.cluster = cluster
        self.token = cluster.security.secrets.token
        self.channels: dict[str, grpc.aio.Channel] = {}

    async def agent(self, name: str) -> AgentView:
        cfg = self.cluster.agent(name)
        view = AgentView(name, cfg.dial_address, at=time.monotonic())
        channel = self.channels.get(name)
        if channel is None:
            channel = self.channels[name] = open_channel(cfg.dial_address, self.cluster.security)
        try:
            view.info = await AgentStub(channel, self.token).info(timeout=2.0)
        except grpc.aio.AioRpcError as exc:
            view.error = short_error(exc)
        if cfg.metrics_port:
            try:
                view.samples = await asyncio.to_thread(scrape, metrics_url(cfg.dial_address, cfg.metrics_port))
            except OSError as exc:
                view.error = view.error or f"metrics: {exc}"
        return view

    async def queue(self) -> tuple[dict[str, float] | None, str]:
        coord = self.cluster.coordinator
        if not coord.metrics_port:
            return None, ""
        try:
            samples = await asyncio.to_thread(scrape, metrics_url(coord.dial_address, coord.metrics_port))
        except OSError as exc:
            return None, f"coordinator metrics: {exc}"
        return {dict(lbl).get("state", ""): v for (n, lbl), v in samples.items() if n == "artifex_queue_depth"}, ""

    async def snapshot(self) -> Snapshot:
        views = await asyncio.gather(*(self.agent(a.name) for a in self.cluster.agents))
        queue, err = await self.queue()
        return Snapshot(list(views), queue, err)

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()


def short_error(exc: grpc.aio.AioRpcError) -> str:
    """One line a dashboard cell can hold."""
    details = exc.details() or ""
    if "refused" in details.lower():
        return "unreachable: connection refused"
    if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "no answer within 2 s"
    if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
        return "wrong or missing token"
    return f"{exc.code().name.lower()}: {details[:60]}"


def bound_addresses(run_dir: Path) -> dict[str, str]:
    """Agent name -> address from `up`'s pid files (for agents configured to listen on port 0)."""
    from artifex_agent import daemon

    found = {}
    for _, record in daemon.records(run_dir) if run_dir.is_dir() else []:
        if record is not None and record.kind == "agent" and record.address and record.alive():
            found[record.name] = record.address
    return found


def _rate(now: AgentView, before: AgentView | None, name: str, direction: str) -> float | None:
    if before is None or not now.samples or not before.samples or now.at <= before.at:
        return None
    delta = total(now.samples, name, direction=direction) - total(before.samples, name, direction=direction)
    return max(delta, 0.0) / (now.at - before.at)


def render(snap: Snapshot, previous: Snapshot | None) -> Any:
    """The dashboard as rich renderables."""
    from rich.console import Group
    from rich.table import Table

    before = {v.name: v for v in previous.agents} if previous else {}
    agents = Table(title="artifex-agent top", expand=True)
    for column in ("agent", "GPU", "load", "VRAM", "temp", "streams", "frames/s out·in", "MB/s out·in", "status"):
        agents.add_column(column, overflow="fold")
    for v in snap.agents:
        info = v.info
        if info is None:
            agents.add_row(f"{v.name}\n[dim]{v.address}[/dim]", "", "", "", "", "", "", "",
                           f"[red]✗ {v.error}[/red]")
            continue
        gpus = list(info.gpus)
        # "no NVIDIA driver (NVML: ...)": the part before the parenthesis fits a cell.
        problem = (info.gpu_problem or "no GPU").split(" (")[0]
        gpu = " / ".join(g.name for g in gpus) or f"[yellow]{problem}[/yellow]"
        load = " / ".join(f"{g.utilization_pct}%" for g in gpus)
        vram = " / ".join(f"{g.memory_used / GIB:.1f}/{g.memory_total / GIB:.0f} GiB" for g in gpus)
        temp = " / ".join(f"{g.temperature_c}°C" for g in gpus)
        rates = []
        for name, scale in (("artifex_frames_total", 1.0), ("artifex_stream_bytes_total", 1e-6)):
            out = _rate(v, before.get(v.name), name, "sent")
            got = _rate(v, before.get(v.name), name, "received")
            rates.append("–" if out is None or got is None else f"{out * scale:.1f}·{got * scale:.1f}")
        status = "[green]✓ serving[/green]" + (f" [yellow]({v.error})[/yellow]" if v.error else "")
        agents.add_row(f"{info.name or v.name}\n[dim]{info.hostname} {v.address}[/dim]", gpu, load, vram, temp,
                       str(info.active_streams), *rates, status)
    parts: list[Any] = [agents]
    if snap.queue is not None or snap.queue_error:
        queue = Table(title="queue (coordinator)")
        queue.add_column("state")
        queue.add_column("jobs", justify="right")
        for state, count in sorted((snap.queue or {}).items()):
            queue.add_row(state, f"{count:.0f}")
        if snap.queue == {}:
            queue.add_row("[dim]no jobs yet[/dim]", "0")
        if snap.queue_error:
            queue.add_row("[red]✗[/red]", snap.queue_error)
        parts.append(queue)
    return Group(*parts)


def run(args: argparse.Namespace) -> int:
    cluster = ClusterConfig.load(args.config)
    for name, address in bound_addresses(state_dir(args) / "run").items():
        agent = next((a for a in cluster.agents if a.name == name), None)
        if agent is not None and split_hostport(agent.listen)[1] == 0:
            agent.address = address
    return asyncio.run(_main(cluster, args.interval, args.once))


async def _main(cluster: ClusterConfig, interval: float, once: bool) -> int:
    from rich.console import Console
    from rich.live import Live

    poller = Poller(cluster)
    console = Console()
    try:
        previous = await poller.snapshot()
        if once:
            # Rates need two readings; a short second look gives them without a long wait.
            await asyncio.sleep(min(interval, 1.0))
            snap = await poller.snapshot()
            console.print(render(snap, previous))
            return int(ExitCode.OK if all(v.info for v in snap.agents) else ExitCode.UNHEALTHY)
        with Live(render(previous, None), console=console, refresh_per_second=4, screen=False) as live:
            while True:
                await asyncio.sleep(interval)
                snap = await poller.snapshot()
                live.update(render(snap, previous))
                previous = snap
    except (KeyboardInterrupt, asyncio.CancelledError):
        return int(ExitCode.OK)
    finally:
        await poller.close()

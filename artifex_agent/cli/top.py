"""`artifex-agent top`: a live dashboard of every agent (GPU, VRAM, streams, throughput), the jobs and the queue."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from artifex_agent.cli.options import add_config, add_state_dir, env, state_dir
from artifex_agent.client import AsyncJobsClient, Job, JobEvent
from artifex_agent.config import ClusterConfig, split_hostport
from artifex_agent.errors import ArtifexError, ExitCode
from artifex_agent.metrics import metrics_url, scrape, total
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.timeleft import left
from artifex_agent.transport.channel import AgentStub, open_channel

GIB = 1 << 30
# Jobs listed at most (running first, then the head of the queue).
MAX_JOBS = 20


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "top", help="live dashboard of every PC: GPU load, VRAM, temperature, streams, throughput, queue",
        description="Polls every agent's Diagnostics.Info (and its Prometheus endpoint when metrics_port is "
                    "set, for frame and byte rates; the coordinator's for queue depth), and the coordinator's "
                    "running and queued jobs with their stage and step. An agent added to the cluster file "
                    "appears at the next refresh. q or Ctrl+C quits.")
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
class JobRow:
    """A running or queued job, with the last progress its agent reported (stage, step k of n)."""

    job: Job
    stage: str = ""
    step: int = 0
    total: int = 0
    agent: str = ""


@dataclass
class Snapshot:
    agents: list[AgentView]
    queue: dict[str, float] | None
    queue_error: str = ""
    at: float = field(default_factory=time.monotonic)
    # None: the cluster file names no coordinator.
    jobs: list[JobRow] | None = None
    jobs_error: str = ""


class Poller:
    """Keeps one channel per agent, and one to the coordinator, open across refreshes."""

    def __init__(self, cluster: ClusterConfig, load: Callable[[], ClusterConfig] | None = None) -> None:
        self.cluster = cluster
        # Reads the cluster file again (agents added or removed show at the next refresh).
        self.load = load
        self._stamp = _stamp(cluster)
        self.token = cluster.security.secrets.token
        self.channels: dict[str, grpc.aio.Channel] = {}
        self.jobs_client: AsyncJobsClient | None = None
        # Job id -> its latest progress event, from one Watch of every job.
        self.progress: dict[str, JobEvent] = {}
        self._watch: asyncio.Task[None] | None = None

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

    async def jobs(self) -> tuple[list[JobRow] | None, str]:
        """Running jobs with their step, then the queue's head with why each waits; None: no coordinator."""
        if "coordinator" not in self.cluster.sections:
            return None, ""
        if self.jobs_client is None:
            self.jobs_client = AsyncJobsClient.from_config(self.cluster, timeout=2.0)
        if self._watch is None or self._watch.done():  # (again after the coordinator restarted)
            self._watch = asyncio.create_task(self._follow(self.jobs_client), name="top-watch")
        try:
            jobs = await self.jobs_client.list(["running", "queued"], limit=200)
        except ArtifexError as exc:
            return [], str(exc)
        live = {j.id for j in jobs}
        for gone in [k for k in self.progress if k not in live]:
            del self.progress[gone]
        running = [j for j in jobs if j.state == "running"]
        queued = sorted((j for j in jobs if j.state == "queued"), key=lambda j: (-j.spec.priority, j.created))
        rows = []
        for job in (running + queued)[:MAX_JOBS]:
            p = self.progress.get(job.id) if job.state == "running" else None
            rows.append(JobRow(job, p.stage, p.step, p.total, p.agent) if p else JobRow(job))
        return rows, "" if len(jobs) <= MAX_JOBS else f"and {len(jobs) - MAX_JOBS} more"

    async def _follow(self, client: AsyncJobsClient) -> None:
        """Every job's progress events (the step a running job is at is in no List reply)."""
        with contextlib.suppress(ArtifexError):
            async for event in client.watch(""):
                if event.kind == "progress":
                    self.progress[event.job_id] = event

    async def refresh_config(self) -> None:
        """The cluster file again when it changed since the last look; channels of agents gone are closed."""
        stamp = _stamp(self.cluster)
        if self.load is None or stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self.cluster = self.load()
        except ArtifexError:
            return  # half-written: the next refresh reads it again
        names = {a.name for a in self.cluster.agents}
        for name in [n for n in self.channels if n not in names]:
            await self.channels.pop(name).close()

    async def snapshot(self) -> Snapshot:
        await self.refresh_config()
        views = await asyncio.gather(*(self.agent(a.name) for a in self.cluster.agents))
        queue, err = await self.queue()
        jobs, jobs_err = await self.jobs()
        return Snapshot(list(views), queue, err, jobs=jobs, jobs_error=jobs_err)

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        if self.jobs_client is not None:
            await self.jobs_client.close()
        for channel in self.channels.values():
            await channel.close()


def _stamp(cluster: ClusterConfig) -> float:
    """The cluster file's mtime (0: none, or unreadable)."""
    try:
        return cluster.source.stat().st_mtime if cluster.source is not None else 0.0
    except OSError:
        return 0.0


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


def doing(row: JobRow) -> str:
    """What a running job is at: "generating · denoise 12/40 (30%)"."""
    said = row.stage if row.stage and row.stage != row.job.stage else ""
    step = f"{row.step}/{row.total} ({100 * row.step // row.total}%)" if row.total else ""
    return " · ".join(filter(None, (row.job.stage, " ".join(filter(None, (said, step))))))


def jobs_table(rows: list[JobRow], more: str, now: float) -> Any:
    """Running jobs with their stage and step, then queued ones with why they wait."""
    from rich.table import Table

    table = Table(title="jobs (coordinator)", expand=True)
    for column in ("job", "state", "stage · step", "agent", "for"):
        table.add_column(column, no_wrap=True)
    table.add_column("prompt / why it waits", overflow="fold")
    for row in rows:
        job = row.job
        if job.state == "running":
            since = job.started or now
            table.add_row(job.id, "[yellow]running[/yellow]", " · ".join(filter(None, (doing(row), left(job, now)))),
                          row.agent or job.agent,
                          f"{now - since:.0f}s", job.spec.prompts[0][:60])
        else:
            table.add_row(job.id, "[cyan]queued[/cyan]", job.stage, "", f"{now - job.created:.0f}s",
                          job.why_waiting(now) or job.spec.prompts[0][:60])
    if not rows and not more:
        table.add_row("[dim]none running or queued[/dim]", "", "", "", "", "")
    if more:
        table.add_row(f"[dim]{more}[/dim]" if rows else f"[red]✗[/red] {more}", "", "", "", "", "")
    return table


def render(snap: Snapshot, previous: Snapshot | None) -> Any:
    """The dashboard as rich renderables."""
    from rich.console import Group
    from rich.table import Table

    before = {v.name: v for v in previous.agents} if previous else {}
    # What each agent's running jobs are at: frame rates stay 0 while it denoises, steps do not.
    busy: dict[str, list[str]] = {}
    for row in snap.jobs or []:
        if row.job.state == "running":
            busy.setdefault(row.agent or row.job.agent, []).append(f"{row.job.id} {doing(row)}")
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
        # What the agent said its GPU cannot hold: the coordinator never routes those models there.
        too_big = [m.name for m in info.models if m.cannot_hold]
        status = "[green]✓ serving[/green]" + (f" [yellow]({v.error})[/yellow]" if v.error else "") \
            + (f"\n[dim]cannot hold: {', '.join(too_big)}[/dim]" if too_big else "") \
            + "".join(f"\n{line}" for line in busy.get(v.name, []))
        agents.add_row(f"{info.name or v.name}\n[dim]{info.hostname} {v.address}[/dim]", gpu, load, vram, temp,
                       str(info.active_streams), *rates, status)
    parts: list[Any] = [agents]
    if snap.jobs is not None:
        parts.append(jobs_table(snap.jobs, snap.jobs_error, time.time()))
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
    def load() -> ClusterConfig:
        cluster = ClusterConfig.load(args.config)
        for name, address in bound_addresses(state_dir(args) / "run").items():
            agent = next((a for a in cluster.agents if a.name == name), None)
            if agent is not None and split_hostport(agent.listen)[1] == 0:
                agent.address = address
        return cluster

    return asyncio.run(_main(load(), args.interval, args.once, load))


async def _main(cluster: ClusterConfig, interval: float, once: bool,
                load: Callable[[], ClusterConfig] | None = None) -> int:
    from rich.console import Console
    from rich.live import Live

    poller = Poller(cluster, load)
    console = Console()
    try:
        previous = await poller.snapshot()
        if once:
            # Rates need two readings; a short second look gives them without a long wait.
            await asyncio.sleep(min(interval, 1.0))
            snap = await poller.snapshot()
            console.print(render(snap, previous))
            return int(ExitCode.OK if all(v.info for v in snap.agents) else ExitCode.UNHEALTHY)
        with QuitKey() as keys, Live(render(previous, None), console=console, refresh_per_second=4,
                                     screen=False) as live:
            while not keys.pressed.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(keys.pressed.wait(), interval)
                if keys.pressed.is_set():
                    break
                snap = await poller.snapshot()
                live.update(render(snap, previous))
                previous = snap
        return int(ExitCode.OK)
    except (KeyboardInterrupt, asyncio.CancelledError):
        return int(ExitCode.OK)
    finally:
        await poller.close()


class QuitKey:
    """Sets `pressed` when q is typed on the terminal (stdin); nothing to do when stdin is not one."""

    def __init__(self) -> None:
        self.pressed = asyncio.Event()
        self._saved: Any = None
        self._poll: asyncio.Task[None] | None = None

    def __enter__(self) -> QuitKey:
        if not sys.stdin.isatty():
            return self
        if sys.platform == "win32":
            self._poll = asyncio.create_task(self._windows())
        else:
            import termios
            import tty

            fd = sys.stdin.fileno()
            self._saved = termios.tcgetattr(fd)
            # Keys arrive one at a time, not echoed, without Enter; Ctrl+C still interrupts.
            tty.setcbreak(fd)
            asyncio.get_running_loop().add_reader(fd, self._read, fd)
        return self

    def _read(self, fd: int) -> None:
        if set(os.read(fd, 64)) & set(b"qQ"):
            self.pressed.set()

    async def _windows(self) -> None:
        if sys.platform == "win32":  # the console has no selectable handle: poll it
            import msvcrt

            while True:
                while msvcrt.kbhit():
                    if msvcrt.getwch() in "qQ":
                        self.pressed.set()
                await asyncio.sleep(0.1)

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self._poll is not None:
            self._poll.cancel()
        if self._saved is not None and sys.platform != "win32":
            import termios

            fd = sys.stdin.fileno()
            asyncio.get_running_loop().remove_reader(fd)
            termios.tcsetattr(fd, termios.TCSADRAIN, self._saved)

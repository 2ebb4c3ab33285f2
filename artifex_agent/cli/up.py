"""`artifex-agent up`: start what this PC runs per the cluster file, wait until healthy, report.

Agents whose listen address is on this machine, the coordinator when its address is here,
and the drop-folder watcher beside the coordinator (it submits there and watches that PC's
share); each a detached process with a pid file, so `artifex-agent down` can stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from artifex_agent import daemon
from artifex_agent.cli.options import add_config, add_state_dir, env, state_dir
from artifex_agent.cli.processes import print_table
from artifex_agent.config import ClusterConfig, split_hostport
from artifex_agent.errors import ArtifexError, ExitCode
from artifex_agent.hosts import is_local_host, local_addresses
from artifex_agent.transport.channel import open_channel
from artifex_agent.transport.diagnose import explain
from artifex_agent.transport.security import call_metadata

WILDCARDS = ("", "0.0.0.0", "::", "*")


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "up", help="start this PC's agent(s), coordinator and watcher per the cluster file; wait until healthy",
        description="Starts, as background processes with pid files, every agent whose listen address is on "
                    "this machine, the coordinator if its address is here, and the watcher beside it; waits "
                    "until each is healthy and prints a status table. `artifex-agent down` stops them.")
    add_config(p)
    p.add_argument("--name", action="append", default=None,
                   help="start only this agent (repeatable; default: every local agent)")
    add_state_dir(p)
    p.add_argument("--timeout", type=float, default=env("--timeout", 300.0),
                   help="seconds to wait for each process to become healthy (preloading models takes time)")
    p.add_argument("--no-health", action="store_true", default=env("--no-health", False),
                   help="print only which processes are ready, not the health table afterwards")


@dataclass
class Component:
    """One process this PC should run."""

    kind: str
    name: str
    args: list[str]
    address: str = ""  # host:port to health-check; "" for none (the watcher)


def is_local(listen: str, dial: str, here: set[str]) -> bool:
    host = split_hostport(listen)[0]
    if host in WILDCARDS:
        host = split_hostport(dial)[0]
    return is_local_host(host, here)


def probe_address(listen: str, port: int | None = None) -> str:
    """Where to reach a local listener: its own host (loopback for a wildcard)."""
    host, configured = split_hostport(listen)
    host = "127.0.0.1" if host in WILDCARDS else host
    return f"[{host}]:{port or configured}" if ":" in host else f"{host}:{port or configured}"


def configured_sections(path: Path | None) -> set[str]:
    """Top-level tables the cluster file itself names (defaults exist for every section)."""
    if path is None:
        return set()
    return set(tomllib.loads(path.read_text(encoding="utf-8")))


def plan(cluster: ClusterConfig, config: Path | None, names: list[str] | None) -> list[Component]:
    """What this PC should run, in start order."""
    here = local_addresses()
    cfg_args = ["--config", str(config)] if config else []
    comps = []
    for agent in cluster.agents:
        if names and agent.name not in names:
            continue
        if names or is_local(agent.listen, agent.dial_address, here):
            comps.append(Component("agent", agent.name, ["serve", *cfg_args, "--name", agent.name],
                                   probe_address(agent.listen)))
    if names:
        return comps
    coord = cluster.coordinator
    coordinator_here = is_local(coord.listen, coord.dial_address, here)
    if coordinator_here and ("coordinator" in configured_sections(config) or config is None):
        comps.append(Component("coordinator", "coordinator", ["coordinator", *cfg_args], probe_address(coord.listen)))
    if coordinator_here and "watcher" in configured_sections(config):
        comps.append(Component("watcher", "watcher", ["watch", *cfg_args]))
    return comps


def run(args: argparse.Namespace) -> int:
    config = Path(args.config).expanduser().resolve() if args.config else None
    cluster = ClusterConfig.load(config)
    comps = plan(cluster, config, args.name)
    if not comps:
        raise ArtifexError("nothing to start here: no agent or coordinator in the cluster file listens on an "
                           f"address of this machine ({', '.join(sorted(local_addresses()))})")
    root = state_dir(args)
    rows = []
    failed = False
    for comp in comps:
        row = start_and_wait(comp, cluster, root, args.timeout, args.log_format)
        failed |= row["state"] not in ("ready", "already running")
        rows.append(row)
        if comp.kind == "agent" and row["address"] and split_hostport(cluster.agent(comp.name).listen)[1] == 0:
            # Listening on :0: health must dial the port the agent actually bound.
            cluster.agent(comp.name).address = row["address"]
    print_table(rows)
    if failed:
        return int(ExitCode.UNHEALTHY)
    if not args.no_health:
        return run_health(cluster)
    return int(ExitCode.OK)


def start_and_wait(comp: Component, cluster: ClusterConfig, root: Path, timeout: float,
                   log_format: str = "text") -> dict[str, str]:
    """Start one component unless it already runs; wait until it answers health checks."""
    run_dir = root / "run"
    path = daemon.pid_path(run_dir, comp.kind, comp.name)
    old = daemon.PidRecord.load(path) if path.exists() else None
    if old is not None and old.alive():
        return {"process": old.label, "pid": str(old.pid), "address": old.address, "state": "already running",
                "log": old.log}
    path.unlink(missing_ok=True)
    log = root / "logs" / f"{path.stem}.log"
    args = list(comp.args)
    port_file = None
    if comp.kind == "agent":
        # The agent writes its bound port once listening (also right for a :0 listen address).
        port_file = run_dir / f"{path.stem}.port"
        port_file.unlink(missing_ok=True)
        args += ["--port-file", str(port_file)]
    proc = daemon.spawn(["--log-format", log_format, *args], log)
    record = daemon.PidRecord(comp.kind, comp.name, proc.pid, psutil.Process(proc.pid).create_time(), args,
                              str(log), comp.address, str(port_file or ""))
    record.save(run_dir)
    row = {"process": record.label, "pid": str(proc.pid), "address": comp.address, "state": "ready",
           "log": str(log)}
    try:
        row["address"] = record.address = asyncio.run(_wait_ready(comp, cluster, proc, port_file, timeout))
        record.save(run_dir)
    except ArtifexError as exc:
        row["state"] = f"FAILED: {exc}"
        if proc.poll() is not None:
            path.unlink(missing_ok=True)
            row["pid"] = f"exited {proc.returncode}"
        row["detail"] = _tail(log)
    return row


async def _wait_ready(comp: Component, cluster: ClusterConfig, proc: Any, port_file: Path | None,
                      timeout: float) -> str:
    deadline = time.monotonic() + timeout
    address = comp.address
    if port_file is not None:
        while not port_file.exists():
            _check_alive(proc)
            if time.monotonic() > deadline:
                raise ArtifexError(f"did not start listening within {timeout:.0f}s")
            await asyncio.sleep(0.1)
        address = probe_address(comp.address, int(port_file.read_text()))
    if not address:
        # No port to ask (the watcher): alive after a moment counts as started.
        await asyncio.sleep(2.0)
        _check_alive(proc)
        return ""
    token = cluster.security.secrets.token
    last = "no answer"
    async with open_channel(address, cluster.security) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            _check_alive(proc)
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2, metadata=call_metadata(token))
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return address
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    return address  # answers gRPC but has no health service: as ready as we can tell
                named = await asyncio.to_thread(explain, exc, address, cluster.security, f"the {comp.kind}")
                if named:  # a TLS or token mismatch does not go away by waiting
                    raise ArtifexError(named) from None
                last = exc.details() or exc.code().name
            await asyncio.sleep(0.2)
    raise ArtifexError(f"{address} not serving after {timeout:.0f}s ({last})")


def _check_alive(proc: Any) -> None:
    if proc.poll() is not None:
        raise ArtifexError(f"exited with {proc.returncode}"
                           + (" (configuration error: see the log)" if proc.returncode == ExitCode.STARTUP_FAILURE
                              else ""))


def _tail(log: Path, lines: int = 8) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_health(cluster: ClusterConfig) -> int:
    """The full health table (quick: no bandwidth runs); UNHEALTHY unless every required check passes."""
    from artifex_agent.health.checks import run_health as health_checks
    from artifex_agent.health.render import render

    report = asyncio.run(health_checks(cluster, quick=True))
    render(report)
    return int(ExitCode.OK if report.ok else ExitCode.UNHEALTHY)

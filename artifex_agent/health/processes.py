"""The other processes of the cluster: the coordinator (its gRPC health) and the drop-folder watcher (its heartbeat)."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from artifex_agent.config import ClusterConfig, split_hostport
from artifex_agent.health.checks import CheckResult, HealthContext, check
from artifex_agent.health.link import describe_failure
from artifex_agent.hosts import is_local_host
from artifex_agent.transport.channel import open_channel
from artifex_agent.transport.security import call_metadata
from artifex_agent.watcher.names import STATE

# A watcher beats once per pass: every poll interval, or at least every 5 s (its native-mode rescan).
# Three missed passes, and never less than this, count as stopped.
WATCHER_STALE_MIN_S = 30.0


def coordinator_expected(cluster: ClusterConfig) -> bool:
    """The cluster file configures a coordinator (every file has its defaults; `up` starts it only when named)."""
    return "coordinator" in cluster.sections or bool(cluster.coordinator.address)


def coordinator_here(cluster: ClusterConfig) -> bool:
    return is_local_host(split_hostport(cluster.coordinator.dial_address)[0])


@check("coordinator", "local")
async def coordinator(ctx: HealthContext) -> list[CheckResult]:
    """The coordinator answers the standard health check with SERVING, where the cluster file configures one."""
    cluster = ctx.cluster
    address = cluster.coordinator.dial_address
    expected = coordinator_expected(cluster)
    fix = ("start it: artifex-agent up --config FILE on its PC (or artifex-agent coordinator --config FILE)"
           if coordinator_here(cluster) else f"start it on its PC ({address}): artifex-agent up --config FILE")
    async with open_channel(address, cluster.security) as channel:
        t0 = time.perf_counter()
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=ctx.connect_timeout,
                metadata=call_metadata(cluster.security.secrets.token))
        except grpc.aio.AioRpcError as exc:
            why = await describe_failure(exc, address, cluster.security, ctx.connect_timeout, "the coordinator")
            if not expected:
                return [CheckResult("coordinator", ok=True, required=False, value="not configured ([coordinator] "
                                    "absent): `submit` goes straight to the agents", target="SERVING")]
            if why.startswith("TLS:") or "token" in why:
                fix = "the same [security] token and TLS files as the coordinator"
            return [CheckResult("coordinator", ok=False, value=why, target="SERVING", fix=fix)]
    ms = (time.perf_counter() - t0) * 1000
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    ok = reply.status == health_pb2.HealthCheckResponse.SERVING
    return [CheckResult("coordinator", ok=ok, required=expected, value=f"{status} at {address} ({ms:.1f} ms)",
                        target="SERVING", fix="" if ok else "see the coordinator's log (artifex-agent logs)")]


@check("watcher", "local")
async def watcher(ctx: HealthContext) -> list[CheckResult]:
    """Each drop-folder watcher's heartbeat is recent (and its process alive, when it runs on this PC)."""
    cluster = ctx.cluster
    expected = "watcher" in cluster.sections
    state = cluster.watcher.root / STATE
    limit = max(WATCHER_STALE_MIN_S, 3 * cluster.watcher.poll_interval_s)
    beats = await asyncio.to_thread(_heartbeats, state)
    fix = "start it: artifex-agent up --config FILE on the coordinator's PC (or artifex-agent watch --config FILE)"
    if not beats:
        if not expected:
            return [CheckResult("watcher", ok=True, required=False, value="not configured ([watcher] absent)",
                                target="a heartbeat")]
        if not cluster.watcher.root.exists() and not coordinator_here(cluster):
            return [CheckResult("watcher", ok=True, required=False, target="a heartbeat",
                                value=f"runs beside the coordinator; its folder {cluster.watcher.root} is not "
                                      "visible from this PC")]
        return [CheckResult("watcher", ok=False, value=f"no heartbeat in {state}", target="a heartbeat", fix=fix)]
    rows = []
    for owner, age, pid, host in beats:
        gone = host == socket.gethostname() and pid > 0 and not psutil.pid_exists(pid)
        ok = age < limit and not gone
        value = f"heartbeat {age:.1f} s ago" + (f" (pid {pid} on {host})" if pid else "")
        if gone:
            value += ": that process is gone"
        rows.append(CheckResult(f"watcher {owner}", ok=ok, required=expected, value=value,
                                target=f"< {limit:.0f} s old", fix="" if ok else fix))
    return rows


def _heartbeats(state: Path) -> list[tuple[str, float, int, str]]:
    """(owner, seconds since its last beat, pid, host) for each heartbeat file in `state`."""
    found = []
    now = time.time()
    for path in sorted(state.glob("*.alive")) if state.is_dir() else []:
        try:
            age = max(0.0, now - path.stat().st_mtime)
            words = path.read_text(encoding="utf-8").split()
        except OSError:
            continue
        pid = int(words[1]) if len(words) > 1 and words[1].isdigit() else 0
        found.append((path.stem, age, pid, words[2] if len(words) > 2 else ""))
    return found

"""`health` covers every process: the coordinator (its gRPC health) and the watcher (its heartbeat)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from artifex_agent.config import ClusterConfig
from artifex_agent.health import processes
from artifex_agent.health.checks import CheckResult, HealthContext, load_checks
from artifex_agent.launcher import ChildProcess, wait_serving
from artifex_agent.local_cluster import free_port, write_cluster_toml
from artifex_agent.watcher.claim import Heartbeats
from artifex_agent.watcher.names import Layout

TOKEN = "processes-token-5d0e"


def _cluster(tmp_path: Path, coordinator_port: int, *, watcher: bool = True) -> ClusterConfig:
    sections: dict[str, dict[str, object]] = {
        "security": {"token": TOKEN},
        "coordinator": {"listen": f"127.0.0.1:{coordinator_port}", "database": str(tmp_path / "jobs.db"),
                        "results_cache": str(tmp_path / "cache")}}
    if watcher:
        sections["watcher"] = {"root": str(tmp_path / "drop"), "ledger": str(tmp_path / "watcher.db")}
    path = write_cluster_toml(tmp_path / "c.toml", {"a": {"listen": "127.0.0.1:9", "device": "cpu"}}, **sections)
    return ClusterConfig.load(path)


def _rows(fn: object, cluster: ClusterConfig) -> list[CheckResult]:
    return asyncio.run(fn(HealthContext(cluster, connect_timeout=2.0)))  # type: ignore[operator]


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    """A real `artifex-agent coordinator` with a token (its agent is absent: it still answers health)."""
    tmp = tmp_path_factory.mktemp("health-coordinator")
    port = free_port()
    cluster = _cluster(tmp, port)
    assert cluster.source is not None
    child = ChildProcess(["coordinator", "--config", str(cluster.source), "--port-file", str(tmp / "c.port")],
                         tmp / "coordinator.log", tmp / "c.port").start()
    try:
        child.wait_port()
        asyncio.run(wait_serving(f"127.0.0.1:{port}", TOKEN, timeout=20))
        yield tmp, port
    finally:
        child.stop()


def test_health_has_rows_for_the_coordinator_and_the_watcher() -> None:
    assert {"coordinator", "watcher"} <= {c.name for c in load_checks()}


def test_a_configured_coordinator_that_is_down_fails_health(tmp_path: Path) -> None:
    [row] = _rows(processes.coordinator, _cluster(tmp_path, free_port()))
    assert not row.ok and row.required and "refused" in row.value and "artifex-agent up" in row.fix


def test_a_serving_coordinator_passes(coordinator: tuple[Path, int]) -> None:
    tmp, port = coordinator
    [row] = _rows(processes.coordinator, _cluster(tmp, port))
    assert row.ok and row.required and row.value.startswith(f"SERVING at 127.0.0.1:{port}")


def test_a_coordinator_the_file_does_not_configure_is_not_required(tmp_path: Path) -> None:
    path = write_cluster_toml(tmp_path / "c.toml", {"a": {"listen": "127.0.0.1:9"}})
    cluster = ClusterConfig.load(path)
    cluster.coordinator.listen = f"127.0.0.1:{free_port()}"
    [row] = _rows(processes.coordinator, cluster)
    assert row.ok and not row.required and "not configured" in row.value


def test_the_watcher_is_checked_by_its_heartbeat(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path, free_port())
    [row] = _rows(processes.watcher, cluster)
    assert not row.ok and row.required and "no heartbeat" in row.value
    # What a running watcher writes each pass (watcher/claim.py), in the configured drop folder.
    layout = Layout(cluster.watcher.root)
    layout.state.mkdir(parents=True)
    beats = Heartbeats(layout, "pc1", 300.0)
    beats.beat()
    [row] = _rows(processes.watcher, cluster)
    assert row.ok and row.name == "watcher pc1" and f"pid {os.getpid()}" in row.value
    # A watcher that stopped beating: stale.
    old = time.time() - 120
    os.utime(beats.path, (old, old))
    [row] = _rows(processes.watcher, cluster)
    assert not row.ok and float(row.value.split()[1]) >= 119


def test_no_watcher_row_is_required_when_the_file_has_no_watcher(tmp_path: Path) -> None:
    [row] = _rows(processes.watcher, _cluster(tmp_path, free_port(), watcher=False))
    assert row.ok and not row.required

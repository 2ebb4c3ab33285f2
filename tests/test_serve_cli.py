"""`artifex-agent serve` as a process: named exit codes, secure defaults, graceful stop."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from artifex_agent.errors import ExitCode
from artifex_agent.launcher import start_agent
from artifex_agent.local_cluster import write_cluster_toml


def _serve(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "artifex_agent", "serve", *args], capture_output=True, text=True,
                          timeout=timeout, env={"ARTIFEX_TOKEN": "", "PATH": "/usr/bin:/bin"})


def test_non_loopback_listen_without_token_refuses_to_start(tmp_path: Path) -> None:
    cfg = write_cluster_toml(tmp_path / "c.toml", {"pc1": {"listen": "0.0.0.0:0", "output_root": str(tmp_path)}})
    proc = _serve("--config", str(cfg))
    assert proc.returncode == ExitCode.STARTUP_FAILURE
    assert "without a shared token" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_config_exits_with_startup_failure(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[agents.pc1]\nlisten = 'nowhere'\n")
    proc = _serve("--config", str(bad))
    assert proc.returncode == ExitCode.STARTUP_FAILURE
    assert "host:port" in proc.stderr


@pytest.mark.slow
def test_port_in_use_exits_with_startup_failure(tmp_path: Path) -> None:
    cfg = write_cluster_toml(tmp_path / "c.toml", {"a": {"listen": "127.0.0.1:0", "output_root": str(tmp_path)}})
    first = start_agent(cfg, "a", tmp_path)
    try:
        proc = _serve("--config", str(cfg), "--listen", f"127.0.0.1:{first.port}")
        assert proc.returncode == ExitCode.STARTUP_FAILURE
        assert "cannot listen" in proc.stderr
    finally:
        first.stop()


def test_sigterm_stops_gracefully_and_health_goes_not_serving(tmp_path: Path) -> None:
    cfg = write_cluster_toml(tmp_path / "c.toml", {"a": {"listen": "127.0.0.1:0", "output_root": str(tmp_path)}})
    child = start_agent(cfg, "a", tmp_path)

    async def status() -> int:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{child.port}") as ch:
            reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            return reply.status

    assert asyncio.run(status()) == health_pb2.HealthCheckResponse.SERVING
    assert child.proc is not None
    child.proc.send_signal(signal.SIGTERM)
    assert child.proc.wait(30) == 0
    assert "stopped" in child.log_tail()

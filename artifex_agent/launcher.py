"""Start agents (and other artifex-agent processes) as child processes and wait until ready."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from artifex_agent.errors import ArtifexError
from artifex_agent.transport.security import call_metadata


@dataclass
class ChildProcess:
    """One `artifex-agent` child: its command, log, and the port it bound."""

    args: list[str]
    log_path: Path
    port_file: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    prefix: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0

    def start(self) -> ChildProcess:
        if self.port_file is not None:
            self.port_file.unlink(missing_ok=True)
        env = {**os.environ, **self.env}
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        # A new session: Ctrl+C in the parent's terminal reaches the parent, which stops us cleanly.
        self.proc = subprocess.Popen([*self.prefix, sys.executable, "-m", "artifex_agent", *self.args],
                                     stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        return self

    def wait_port(self, timeout: float = 60.0) -> int:
        """Wait for the port file; fails with the child's log tail if it exits first."""
        assert self.proc is not None and self.port_file is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.port_file.exists():
                self.port = int(self.port_file.read_text())
                return self.port
            if self.proc.poll() is not None:
                raise ArtifexError(f"process exited with {self.proc.returncode}:\n{self.log_tail()}")
            time.sleep(0.05)
        raise ArtifexError(f"process did not start within {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        # Windows has no SIGTERM for console children; CTRL_BREAK reaches a new process group.
        stop_signal = getattr(signal, "CTRL_BREAK_EVENT", signal.SIGTERM) if sys.platform == "win32" else signal.SIGTERM
        self.proc.send_signal(stop_signal)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        """kill -9: no clean-up at all (crash tests)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start_agent(config: Path, name: str, workdir: Path, *, extra: list[str] | None = None,
                env: dict[str, str] | None = None, prefix: list[str] | None = None, wait: bool = True) -> ChildProcess:
    """Start `artifex-agent serve --name NAME` and wait for its port (`wait=False`: the caller's `wait_port()`)."""
    port_file = workdir / f"{name}.port"
    child = ChildProcess(["serve", "--config", str(config), "--name", name, "--port-file", str(port_file),
                          *(extra or [])], workdir / f"{name}.log", port_file, env or {}, prefix or [])
    child.start()
    if wait:
        child.wait_port()
    return child


async def wait_serving(address: str, token: str = "", timeout: float = 60.0) -> None:
    """Wait until the standard health service at `address` says SERVING."""
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        last = ""
        while time.monotonic() < deadline:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2, metadata=call_metadata(token))
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.aio.AioRpcError as exc:
                last = exc.details() or exc.code().name
            await asyncio.sleep(0.1)
    raise ArtifexError(f"{address} not serving after {timeout:.0f}s ({last})")

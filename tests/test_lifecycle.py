"""One lifecycle for agent, coordinator and watcher: the same signals, the same exit codes, the same bind error."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from artifex_agent.certs import TLS_NAME, make_certs
from artifex_agent.config import ClusterConfig
from artifex_agent.coordinator.server import Coordinator
from artifex_agent.errors import ConfigError, ExitCode
from artifex_agent.launcher import ChildProcess, wait_serving
from artifex_agent.lifecycle import StopRequest, serve
from artifex_agent.local_cluster import write_cluster_toml
from artifex_agent.server import Agent
from artifex_agent.transport.security import call_metadata
from artifex_agent.watcher.service import Watcher

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _config(tmp: Path, listen: str = "127.0.0.1:0", **security: Any) -> Path:
    """One agent, a coordinator and a drop folder, all in `tmp`, all on loopback."""
    sections: dict[str, dict[str, Any]] = {
        "coordinator": {"listen": listen, "database": str(tmp / "jobs.db"), "results_cache": str(tmp / "cache")},
        "watcher": {"root": str(tmp / "drop"), "ledger": str(tmp / "ledger.db"), "poll_interval_s": 0.1},
    }
    if security:
        sections["security"] = security
    agent = {"listen": listen, "output_root": str(tmp / "out"), "models_root": str(tmp / "models")}
    return write_cluster_toml(tmp / "cluster.toml", {"a": agent}, **sections)


def _start(kind: str, tmp: Path, config: Path) -> ChildProcess:
    """`serve`, `coordinator` or `watch` as a real process, ready for work when this returns."""
    port_file = tmp / f"{kind}.port"
    args = {"agent": ["serve", "--name", "a", "--port-file", str(port_file)],
            "coordinator": ["coordinator", "--port-file", str(port_file)],
            "watcher": ["watch"]}[kind]
    child = ChildProcess([*args, "--config", str(config)], tmp / f"{kind}.log",
                         port_file if kind != "watcher" else None, {"ARTIFEX_TOKEN": ""}).start()
    if kind == "watcher":
        deadline = time.monotonic() + 60
        while "watching " not in child.log_tail(200):
            assert child.proc is not None and child.proc.poll() is None, child.log_tail()
            assert time.monotonic() < deadline, child.log_tail()
            time.sleep(0.05)
    else:
        child.wait_port()
    return child


def test_a_second_stop_request_exits_at_once() -> None:
    stops: list[int] = []
    request = StopRequest(lambda: stops.append(1))
    request()
    assert stops == [1]
    with pytest.raises(SystemExit) as exc:
        request()
    assert exc.value.code == ExitCode.INTERRUPTED and stops == [1]


@pytest.mark.parametrize("kind", ["agent", "coordinator", "watcher"])
def test_second_signal_exits_interrupted_the_same_everywhere(kind: str, tmp_path: Path) -> None:
    child = _start(kind, tmp_path, _config(tmp_path))
    assert child.proc is not None
    # Two different signals back to back: both arrive (two SIGTERMs could merge into one pending signal)
    # while the first one's graceful stop is under way.
    child.proc.send_signal(signal.SIGTERM)
    child.proc.send_signal(signal.SIGINT)
    assert child.proc.wait(30) == ExitCode.INTERRUPTED, child.log_tail()
    assert "second stop request: exiting now" in child.log_tail(200)


def test_coordinator_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    child = _start("coordinator", tmp_path, _config(tmp_path))
    assert child.proc is not None
    proc = child.proc

    async def watch() -> list[int]:
        seen: list[int] = []
        async with grpc.aio.insecure_channel(f"127.0.0.1:{child.port}") as channel:
            try:
                async for reply in health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest()):
                    seen.append(reply.status)
                    if reply.status == SERVING:
                        proc.send_signal(signal.SIGTERM)
                    elif reply.status == NOT_SERVING:
                        break
            except grpc.aio.AioRpcError:
                pass  # the server went away: `seen` says whether NOT_SERVING came first
        return seen

    assert asyncio.run(watch()) == [SERVING, NOT_SERVING]
    assert proc.wait(30) == ExitCode.OK, child.log_tail()
    assert "coordinator stopped" in child.log_tail()


async def _check(address: str, token: str) -> str:
    """A new client's health check with `token`: "ok" or the status code's name."""
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10,
                                                             metadata=call_metadata(token))
            return "ok"
        except grpc.aio.AioRpcError as exc:
            return exc.code().name


def test_sighup_makes_an_agent_take_the_token_file_as_it_now_is(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("old-token\n")
    child = _start("agent", tmp_path, _config(tmp_path, token_file=str(token_file)))
    assert child.proc is not None
    address = f"127.0.0.1:{child.port}"

    def check(token: str) -> str:
        return asyncio.run(_check(address, token))

    try:
        asyncio.run(wait_serving(address, "old-token", timeout=30))
        token_file.write_text("new-token\n")
        # Edited on disk, not reloaded: the agent still holds what it read at start.
        assert (check("old-token"), check("new-token")) == ("ok", "UNAUTHENTICATED")
        child.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while "reloaded the token" not in child.log_tail(200):
            assert time.monotonic() < deadline, child.log_tail()
            time.sleep(0.05)
        assert (check("new-token"), check("old-token")) == ("ok", "UNAUTHENTICATED")
    finally:
        assert child.stop() == ExitCode.OK, child.log_tail()


def test_coordinator_reload_swaps_the_token_for_calls_and_its_agent_checks(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARTIFEX_TOKEN", raising=False)
    token_file = tmp_path / "token"
    token_file.write_text("old-token\n")
    coordinator = Coordinator(ClusterConfig.load(_config(tmp_path, token_file=str(token_file))), grace_s=0.5)

    async def scenario() -> tuple[str, ...]:
        await coordinator.startup()
        address = f"127.0.0.1:{coordinator.port}"
        try:
            token_file.write_text("new-token\n")
            before = await _check(address, "new-token")
            coordinator.reload()
            assert coordinator.scheduler is not None
            sent = {a.stub.token for a in coordinator.scheduler.pool} | {coordinator.scheduler.pool.token}
            return before, await _check(address, "new-token"), await _check(address, "old-token"), *sent
        finally:
            await coordinator.shutdown()

    assert asyncio.run(scenario()) == ("UNAUTHENTICATED", "ok", "UNAUTHENTICATED", "new-token")


def test_tls_files_replaced_on_disk_reach_new_connections_after_a_reload_only(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ARTIFEX_TOKEN", "ARTIFEX_TLS_CERT", "ARTIFEX_TLS_KEY", "ARTIFEX_TLS_CA"):
        monkeypatch.delenv(name, raising=False)
    first, second, live = tmp_path / "first", tmp_path / "second", tmp_path / "live"
    for folder in (first, second):
        make_certs(folder, {"pc1": ["127.0.0.1"], "pc2": []})
    live.mkdir()
    for name in ("pc1.pem", "pc1.key", "ca.pem"):
        shutil.copy(first / name, live / name)
    coordinator = Coordinator(ClusterConfig.load(_config(tmp_path, tls_cert=str(live / "pc1.pem"),
                                                         tls_key=str(live / "pc1.key"), tls_ca=str(live / "ca.pem"))))

    async def client(folder: Path) -> str:
        """A client with the second-PC certificate of `folder`'s CA: "ok" or the status code's name."""
        creds = grpc.ssl_channel_credentials((folder / "ca.pem").read_bytes(), (folder / "pc2.key").read_bytes(),
                                             (folder / "pc2.pem").read_bytes())
        async with grpc.aio.secure_channel(f"127.0.0.1:{coordinator.port}", creds,
                                           options=[("grpc.ssl_target_name_override", TLS_NAME)]) as channel:
            try:
                await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
                return "ok"
            except grpc.aio.AioRpcError as exc:
                return exc.code().name

    async def scenario() -> list[tuple[str, str]]:
        await coordinator.startup()
        try:
            seen = [(await client(first), await client(second))]
            for name in ("pc1.pem", "pc1.key", "ca.pem"):  # replaced on disk, as a renewal would
                shutil.copy(second / name, tmp_path / name)
                (tmp_path / name).replace(live / name)
            seen.append((await client(first), await client(second)))
            coordinator.reload()
            seen.append((await client(first), await client(second)))
            return seen
        finally:
            await coordinator.shutdown()

    assert asyncio.run(scenario()) == [("ok", "UNAVAILABLE"), ("ok", "UNAVAILABLE"), ("UNAVAILABLE", "ok")]


def test_bind_failure_reads_the_same_for_agent_and_coordinator(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        address = f"127.0.0.1:{held.getsockname()[1]}"
        cluster = ClusterConfig.load(_config(tmp_path, listen=address))
        agent, coordinator = Agent(cluster, cluster.agent("a")), Coordinator(cluster)
        errors = []
        try:
            for service in (agent, coordinator):
                with pytest.raises(ConfigError) as exc:
                    asyncio.run(service.startup())
                errors.append(str(exc.value))
        finally:
            if agent.engine is not None:
                agent.engine.close()
    assert errors[0] == errors[1] and errors[0].startswith(f"cannot listen on {address}: ")


@pytest.fixture
def fake_sigbreak(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """SIGBREAK exists only on Windows: SIGUSR2 plays it; what reaches no lifecycle handler is noted."""
    monkeypatch.setattr(signal, "SIGBREAK", signal.SIGUSR2, raising=False)
    kept = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2)}
    missed: list[str] = []
    signal.signal(signal.SIGUSR2, lambda *_: missed.append("SIGBREAK reached no handler of the lifecycle"))
    try:
        yield missed
    finally:
        for sig, handler in kept.items():
            signal.signal(sig, handler)
        asyncio.set_event_loop_policy(None)  # serve() may have installed uvloop's


def _break_when(ready: Callable[[], bool], done: threading.Event) -> threading.Thread:
    """SIGBREAK once `ready`; SIGTERM later if that did not stop it, so a failure fails instead of hanging."""
    def send() -> None:
        deadline = time.monotonic() + 60
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGUSR2)
        if not done.wait(10):
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("kind", ["agent", "coordinator", "watcher"])
def test_every_lifecycle_stops_on_sigbreak(kind: str, tmp_path: Path, fake_sigbreak: list[str]) -> None:
    cluster = ClusterConfig.load(_config(tmp_path))
    port_file = tmp_path / "port"
    service: Any = {"agent": lambda: Agent(cluster, cluster.agent("a"), grace_s=1.0),
                    "coordinator": lambda: Coordinator(cluster, grace_s=1.0),
                    "watcher": lambda: Watcher(cluster, None)}[kind]()
    done = threading.Event()
    if kind == "watcher":
        sender = _break_when(lambda: service.mode is not None, done)
        assert serve(service) == ExitCode.OK
    else:
        sender = _break_when(port_file.exists, done)
        assert serve(service, port_file=port_file) == ExitCode.OK
    done.set()
    sender.join(5)
    assert fake_sigbreak == []

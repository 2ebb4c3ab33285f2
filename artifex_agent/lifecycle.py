"""One lifecycle for the long-running commands (agent, coordinator, watcher); imports no torch.

`serve(service)` is the only way the CLI runs one: stop signals first (so a signal during a slow
start-up still stops it), then startup(), main_loop() until a stop is requested, shutdown().
The first SIGINT/SIGTERM/SIGBREAK asks for a graceful stop; a second exits at once with
ExitCode.INTERRUPTED (uvicorn's force_exit). gRPC services also reload their token and TLS files
on SIGHUP and go NOT_SERVING before anything else on the way out.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from artifex_agent.errors import ConfigError, ExitCode

logger = logging.getLogger(__name__)


def install_event_loop() -> None:
    """uvloop where it exists (not on Windows); asyncio's loop otherwise."""
    if sys.platform == "win32":
        return
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def write_port_file(path: Path, port: int) -> None:
    """Publish the bound port atomically, so a reader never sees a half-written number."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(str(port))
    tmp.replace(path)


def stop_signals() -> list[signal.Signals]:
    """SIGINT, SIGTERM, and SIGBREAK where it exists: what `down` and the Windows service send there (daemon.py)."""
    found = [signal.SIGINT, signal.SIGTERM]
    brk = getattr(signal, "SIGBREAK", None)
    if brk is not None:
        found.append(brk)
    return found


class StopRequest:
    """The one stop rule: the first request starts a graceful stop, a second exits now."""

    def __init__(self, on_stop: Callable[[], None]) -> None:
        self.on_stop = on_stop
        self.requested = False

    def __call__(self) -> None:
        if self.requested:
            logger.warning("second stop request: exiting now")
            raise SystemExit(int(ExitCode.INTERRUPTED))
        self.requested = True
        logger.info("stopping (a second signal exits at once)")
        self.on_stop()


def install_signal_handlers(handlers: Mapping[signal.Signals, Callable[[], None]],
                            loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Route each signal to its callback: on the loop when one is given, else in the main thread (signal.signal)."""
    for sig, callback in handlers.items():
        if loop is not None:
            try:
                loop.add_signal_handler(sig, callback)
                continue
            except (NotImplementedError, RuntimeError):  # Windows: no loop signal handlers
                signal.signal(sig, lambda *_, cb=callback: loop.call_soon_threadsafe(cb))
                continue
        signal.signal(sig, lambda *_, cb=callback: cb())


def install_stop_signals(request: Callable[[], None], loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Every stop signal calls `request` (a StopRequest); serves asyncio services and the threaded watcher alike."""
    install_signal_handlers({sig: request for sig in stop_signals()}, loop)


def bind(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    """Add the listening port (TLS when credentials are given); a port that cannot be had is a ConfigError."""
    try:
        port = server.add_secure_port(address, credentials) if credentials is not None else \
            server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if port == 0:
        # One wording for agent and coordinator; grpc's own message adds nothing a user can act on.
        raise ConfigError(f"cannot listen on {address}: the address is in use or not on this machine "
                          "(is another agent or coordinator running there?)")
    return port


@dataclass(kw_only=True)
class GrpcService(abc.ABC):
    """A gRPC process (agent, coordinator): subclasses start it and close what they opened."""

    health: health.aio.HealthServicer = field(default_factory=health.aio.HealthServicer)
    port: int = 0
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.request_stop = StopRequest(self._stopping.set)

    @property
    @abc.abstractmethod
    def health_services(self) -> Sequence[str]:
        """Service names the health servicer reports on (beside the server-wide "")."""

    @abc.abstractmethod
    async def startup(self) -> None:
        """Open everything and start serving; ConfigError when it cannot (exit code 3)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop the work and free what startup opened; health already says NOT_SERVING."""

    @abc.abstractmethod
    def reload(self) -> None:
        """SIGHUP: re-read what may change on disk (the token, the TLS files)."""

    def add_standard_services(self, server: grpc.aio.Server) -> None:
        """The stock health service, and server reflection (`grpcurl list`/`describe`) naming this process's services.

        Both sit behind the server's token check like every other call: with a token configured,
        even `list` needs it (the service names and message shapes say what this process can be asked).
        Reflection answers from the generated descriptors the RPC table's modules registered.
        """
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection((*self.health_services, health.SERVICE_NAME, reflection.SERVICE_NAME),
                                            server)

    async def set_serving(self) -> None:
        for service in ("", *self.health_services):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    async def main_loop(self) -> None:
        await self._stopping.wait()

    async def shutdown(self) -> None:
        """NOT_SERVING first (probes and the coordinator stop sending work), then close()."""
        await self.health.enter_graceful_shutdown()
        await self.close()


class ThreadedService(Protocol):
    """A process whose work runs in threads (the watcher): the same three steps, without a loop."""

    def startup(self) -> None: ...

    def main_loop(self) -> None: ...

    def shutdown(self) -> None: ...

    def request_stop(self) -> None: ...


def serve(service: GrpcService | ThreadedService, port_file: Path | None = None) -> int:
    """Run `service` until stopped; what every long-running command's run() calls."""
    if isinstance(service, GrpcService):
        install_event_loop()
        asyncio.run(_serve_grpc(service, port_file))
        return int(ExitCode.OK)
    # Signals reach only the main thread: a service run from another thread is stopped by its owner.
    if threading.current_thread() is threading.main_thread():
        install_stop_signals(StopRequest(service.request_stop))
    service.startup()
    try:
        service.main_loop()
    finally:
        service.shutdown()
    return int(ExitCode.OK)


async def _serve_grpc(service: GrpcService, port_file: Path | None) -> None:
    loop = asyncio.get_running_loop()
    handlers: dict[signal.Signals, Callable[[], None]] = {sig: service.request_stop for sig in stop_signals()}
    hup = getattr(signal, "SIGHUP", None)
    if hup is not None:  # not on Windows: there a restart reloads
        handlers[hup] = service.reload
    install_signal_handlers(handlers, loop)
    await service.startup()
    if port_file is not None:
        write_port_file(port_file, service.port)
    try:
        await service.main_loop()
    finally:
        await service.shutdown()

"""The web page's HTTP server: uvicorn on the coordinator's own event loop, started and stopped by the coordinator.

uvicorn's signal handlers are not installed: the coordinator's lifecycle (artifex_agent/lifecycle.py) owns
the signals and calls close() on its way out. The socket is bound here, so a port already in use is a
warning (the coordinator runs on without the page) rather than uvicorn's exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn

from artifex_agent.config import ClusterConfig, is_loopback, split_hostport
from artifex_agent.coordinator.jobs import JobQueue
from artifex_agent.errors import ConfigError
from artifex_agent.web.app import Web, create_app

logger = logging.getLogger(__name__)

# SSE streams end when `stopping` is set; anything still open after this long is cut.
SHUTDOWN_S = 2


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the coordinator's lifecycle owns SIGINT/SIGTERM/SIGHUP


class WebServer:
    """The page's app and the uvicorn server serving it on one bound socket."""

    def __init__(self, web: Web, sock: socket.socket, listen: str) -> None:
        self.web = web
        self.sock = sock
        self.listen = listen
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(create_app(web), loop="none", lifespan="off", log_config=None, access_log=False,
                                timeout_graceful_shutdown=SHUTDOWN_S, server_header=False, proxy_headers=False)
        self.server = _Server(config)
        # uvicorn's "Started server process" would read as a second process; this module logs what matters.
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
        self._task: asyncio.Task[None] | None = None
        self._board: asyncio.Task[None] | None = None

    def reload_login(self, cluster: ClusterConfig) -> None:
        """SIGHUP: the login secret as the cluster file says now; a changed one logs every browser out.

        The page keeps listening where it does ([web] listen changes need a restart); beyond loopback a
        file that leaves no secret at all is refused, and the old secret stays.
        """
        password = cluster.web.read_password(cluster.security.secrets.token)
        if not password and not is_loopback(self.listen):
            logger.error("reload: the web page on %s would have no login secret; its login stays as it was",
                         self.listen)
            return
        if self.web.auth.same_password(password):
            return
        self.web.auth = self.web.new_auth(cluster, password)
        logger.info("web page: login secret changed (every browser logs in again)%s",
                    "" if password else "; no password now (loopback only)")

    async def start(self) -> None:
        self._board = asyncio.create_task(self.web.board.follow(self.web.queue.scheduler), name="web-progress")
        self._task = asyncio.create_task(self.server.serve(sockets=[self.sock]), name="web")
        while not self.server.started and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()  # uvicorn could not start: say why

    async def close(self) -> None:
        """End the event streams, then stop the server (cutting what is still open after SHUTDOWN_S)."""
        self.web.stopping.set()
        self.server.should_exit = True
        if self._board is not None:
            self._board.cancel()
        for task in (self._task, self._board):
            if task is None:
                continue
            try:
                await asyncio.wait_for(task, SHUTDOWN_S + 1.0)
            except asyncio.CancelledError:
                pass
            except Exception:  # the coordinator's shutdown goes on whatever the page did
                logger.exception("web page: %s did not stop cleanly", task.get_name())
        self.sock.close()


def check_web_bind(cluster: ClusterConfig) -> str:
    """The login secret; ConfigError when the page would listen beyond loopback without one (like the agents)."""
    cfg = cluster.web
    password = cfg.read_password(cluster.security.secrets.token)
    if cfg.listen and not is_loopback(cfg.listen) and not password:
        raise ConfigError(f"refusing to serve the web page on {cfg.listen} without a login secret: set [web] "
                          "password or password_file, or a [security] token (or [web] listen = \"\" for no page)")
    return password


def bind_socket(listen: str) -> socket.socket | None:
    """A listening socket on `listen`; None (and a WARNING naming the port) when the address is taken."""
    host, port = split_hostport(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, reuse_port=False)
    except OSError as exc:
        logger.warning("web page off: cannot listen on %s (port %d): %s", listen, port, exc.strerror or exc)
        return None
    sock.setblocking(False)
    return sock


async def start_web(cluster: ClusterConfig, queue: JobQueue) -> WebServer | None:
    """Start the page if [web] listen names an address (ConfigError: it may not listen there); None: off."""
    cfg = cluster.web
    if not cfg.listen:
        return None
    password = check_web_bind(cluster)
    sock = bind_socket(cfg.listen)
    if sock is None:
        return None
    server = WebServer(Web.build(cluster, queue, password), sock, cfg.listen)
    await server.start()
    host = split_hostport(cfg.listen)[0]
    logger.info("web page on http://%s:%d/%s", f"[{host}]" if ":" in host else host, server.port,
                "" if password else " (no password: loopback only)")
    return server

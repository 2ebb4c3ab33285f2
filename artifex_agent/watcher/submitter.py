"""What the watcher needs from the coordinator and the agents, as small protocols.

The real implementations are `artifex_agent.client.JobsClient` (the coordinator's Jobs
service) and the agents' Diagnostics.Info; tests of the watcher's own logic can pass
anything with the same shape.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import grpc

from artifex_agent.config import ClusterConfig
from artifex_agent.coordinator.retry import REFUSALS
from artifex_agent.errors import NotFoundError, RequestError
from artifex_agent.jobspec import JobSpec
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb

logger = logging.getLogger(__name__)

# Status codes that say "this input is wrong", as opposed to "try again later": the coordinator's
# refusals, less UNAUTHENTICATED (a token to fix, the same for every input: the watcher waits,
# attempts.AVAILABILITY_CODES) and UNIMPLEMENTED (a peer of another version: may pass once it is updated).
REFUSAL_CODES = REFUSALS - {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNIMPLEMENTED}


class JobLike(Protocol):
    """What `get` returns: the job's state, its outputs when done, its error when not."""

    @property
    def state(self) -> str: ...

    @property
    def outputs(self) -> list[str]: ...

    @property
    def error(self) -> str: ...


class JobSubmitter(Protocol):
    """The coordinator's client as the watcher uses it."""

    def submit(self, spec: JobSpec, idempotency_key: str = "") -> str: ...

    def get(self, job_id: str) -> JobLike: ...


def status_code(exc: BaseException) -> grpc.StatusCode | None:
    """The gRPC status code an exception carries, if any (RpcError, or a wrapper with .code)."""
    code = getattr(exc, "code", None)
    if callable(code):
        try:
            code = code()
        except Exception:  # noqa: BLE001 - not an RpcError after all
            return None
    return code if isinstance(code, grpc.StatusCode) else None


def is_refusal(exc: BaseException) -> bool:
    """True when the coordinator or an agent refused the request itself (no point retrying)."""
    if isinstance(exc, (RequestError, NotFoundError)):
        return True
    code = status_code(exc)
    return code in REFUSAL_CODES


def connect(cluster: ClusterConfig, timeout_s: float = 10.0) -> JobSubmitter:
    """The coordinator client named in the cluster file (a hung coordinator costs one timeout, then a pause)."""
    from artifex_agent.client import JobsClient

    return JobsClient.from_config(cluster, timeout=timeout_s)


class ModelCatalog:
    """Model names the agents have, asked with Diagnostics.Info and kept for `ttl_s`."""

    def __init__(self, cluster: ClusterConfig, ttl_s: float = 30.0, timeout_s: float = 3.0) -> None:
        self.cluster = cluster
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._cached: set[str] | None = None
        self._at = -1e9

    def known(self) -> set[str] | None:
        """Names of every model any agent lists; None when no agent answered (then nothing is refused)."""
        now = time.monotonic()
        if now - self._at < self.ttl_s:
            return self._cached
        self._cached = asyncio.run(self._ask())
        self._at = now
        return self._cached

    async def _ask(self) -> set[str] | None:
        from artifex_agent.transport.channel import AgentStub, open_channel

        token = self.cluster.security.secrets.token
        found: set[str] = set()
        answered = False
        for agent in self.cluster.agents:
            channel = open_channel(agent.dial_address, self.cluster.security)
            try:
                info = await AgentStub(channel, token).info(timeout=self.timeout_s)
                answered = True
                found.update(m.name for m in info.models if m.model_kind != pb.MODEL_KIND_UPSCALE)
            except grpc.aio.AioRpcError as exc:
                logger.info("agent %s did not list its models (%s)", agent.name, exc.code().name)
            finally:
                await channel.close()
        return found if answered else None


ModelLookup = Callable[[], "set[str] | None"]


def describe(exc: BaseException) -> str:
    """A one-line message for a person, without tracebacks."""
    details: Any = getattr(exc, "details", None)
    if callable(details):
        try:
            details = details()
        except Exception:  # noqa: BLE001
            details = None
    code = status_code(exc)
    if details and code is not None:
        return f"{code.name}: {details}"
    return str(exc) or type(exc).__name__

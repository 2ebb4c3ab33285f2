"""Submit jobs to the coordinator and wait for them, from any Python program (sync and asyncio).

    from artifex_agent.client import JobsClient
    from artifex_agent.jobspec import JobSpec

    with JobsClient("127.0.0.1:50050") as client:
        job = client.wait(client.submit(JobSpec(prompts=["a red fox in snow"])))
        print(job.state, job.outputs)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from artifex_agent.config import ClusterConfig, SecurityConfig
from artifex_agent.coordinator.messages import (
    TERMINAL,
    Job,
    JobEvent,
    event_from_pb,
    job_from_pb,
    spec_to_pb,
    state_to_pb,
)
from artifex_agent.errors import ArtifexError, NotFoundError, RequestError
from artifex_agent.jobspec import JobSpec, check_idempotency_key
from artifex_agent.proto.artifex.v1 import jobs_pb2 as jpb
from artifex_agent.proto.artifex.v1 import jobs_pb2_grpc
from artifex_agent.transport import options
from artifex_agent.transport.diagnose import explain
from artifex_agent.transport.security import call_metadata, channel_credentials

__all__ = ["AsyncJobsClient", "CoordinatorError", "CoordinatorUnavailable", "Job", "JobEvent", "JobsClient"]

# While waiting, a coordinator that restarts is waited for, not reported.
_RECONNECT_S = 0.5


class CoordinatorError(ArtifexError):
    """The coordinator answered with an error status."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.UNKNOWN) -> None:
        super().__init__(message)
        self.code = code


class CoordinatorUnavailable(CoordinatorError):
    """The coordinator cannot be reached."""


def _error(exc: grpc.RpcError, address: str, security: SecurityConfig | None = None) -> ArtifexError:
    """The domain error for a failed call (INVALID_ARGUMENT -> RequestError, NOT_FOUND -> NotFoundError...)."""
    code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
    details: str = exc.details() or code.name  # type: ignore[attr-defined]
    # A TLS or token mistake is not an outage: named, and not waited out as a restart would be.
    named = explain(exc, address, security, "the coordinator")
    if named:
        return CoordinatorError(named, code)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return RequestError(details)
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFoundError(details)
    if code == grpc.StatusCode.UNAVAILABLE:
        return CoordinatorUnavailable(f"coordinator at {address} is not reachable ({details})", code)
    return CoordinatorError(f"coordinator: {code.name}: {details}", code)


def _submit_request(spec: JobSpec | dict[str, Any], idempotency_key: str) -> jpb.SubmitRequest:
    """Checked here first, so a bad job is refused before it is sent (RequestError)."""
    checked = JobSpec.from_dict(spec) if isinstance(spec, dict) else spec.validate()
    return jpb.SubmitRequest(spec=spec_to_pb(checked), idempotency_key=check_idempotency_key(idempotency_key))


def _options(security: SecurityConfig | None) -> tuple[list[Any], grpc.ChannelCredentials | None]:
    creds = channel_credentials(security) if security else None
    opts = list(options.CHANNEL_OPTIONS)
    if creds is not None:
        opts.append(("grpc.ssl_target_name_override", "artifex-agent"))
    return opts, creds


def _list_request(states: Iterable[str] | None, limit: int | None) -> jpb.ListJobsRequest:
    return jpb.ListJobsRequest(states=[state_to_pb(s) for s in states or ()], page_size=_page_size(limit))


def _page_size(wanted: int | None) -> int:
    # 0 lets the coordinator choose; it caps what it is asked for anyway.
    return max(0, min(wanted or 0, 0xFFFFFFFF))


def _next_page(request: jpb.ListJobsRequest, reply: jpb.ListJobsReply, got: int,
               limit: int | None) -> jpb.ListJobsRequest | None:
    """The request for the page after `reply`; None when the last page or `limit` jobs have come."""
    if not reply.next_page_token or (limit is not None and got >= limit):
        return None
    return jpb.ListJobsRequest(states=request.states, page_size=_page_size(limit and limit - got),
                               page_token=reply.next_page_token)


def _config_args(cluster: ClusterConfig | str | Path | None) -> tuple[str, str, SecurityConfig]:
    if not isinstance(cluster, ClusterConfig):
        cluster = ClusterConfig.load(cluster)
    return cluster.coordinator.dial_address, cluster.security.secrets.token, cluster.security


class JobsClient:
    """Blocking client of the coordinator's Jobs service."""

    def __init__(self, address: str, token: str = "", *, security: SecurityConfig | None = None,
                 timeout: float = 30.0) -> None:
        self.address = address
        self.timeout = timeout
        self._metadata = call_metadata(token)
        self._security = security
        opts, creds = _options(security)
        self._channel = grpc.secure_channel(address, creds, options=opts) if creds else \
            grpc.insecure_channel(address, options=opts)
        self._stub = jobs_pb2_grpc.JobsStub(self._channel)

    @classmethod
    def from_config(cls, cluster: ClusterConfig | str | Path | None = None, **kw: Any) -> JobsClient:
        """A client for the coordinator the cluster file names (a ClusterConfig or a path)."""
        address, token, security = _config_args(cluster)
        return cls(address, token, security=security, **kw)

    def __enter__(self) -> JobsClient:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        try:
            return method(request, metadata=self._metadata, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            raise _error(exc, self.address, self._security) from None

    def submit(self, spec: JobSpec | dict[str, Any], idempotency_key: str = "") -> str:
        """Queue a job; the same non-empty key always gives the same job id (never a second job)."""
        return str(self._call(self._stub.Submit, _submit_request(spec, idempotency_key)).job_id)

    def get(self, job_id: str) -> Job:
        return job_from_pb(self._call(self._stub.Get, jpb.GetJobRequest(job_id=job_id)))

    def list(self, states: Iterable[str] | None = None, limit: int | None = 100) -> list[Job]:
        """Newest first, optionally only in the given states; limit None or 0: every job (page by page)."""
        limit, jobs = limit or None, []
        request: jpb.ListJobsRequest | None = _list_request(states, limit)
        while request is not None:
            reply = self._call(self._stub.List, request)
            jobs += [job_from_pb(j) for j in reply.jobs]
            request = _next_page(request, reply, len(jobs), limit)
        return jobs[:limit]

    def cancel(self, job_id: str) -> Job:
        return job_from_pb(self._call(self._stub.Cancel, jpb.CancelRequest(job_id=job_id)))

    def retry(self, job_id: str) -> Job:
        return job_from_pb(self._call(self._stub.Retry, jpb.RetryRequest(job_id=job_id)))

    def watch(self, job_id: str = "", *, history: bool = False, timeout: float | None = None) -> Iterator[JobEvent]:
        """The job's snapshot, then its events until it ends (every job's, with no id).

        A job submitted with preview_every sends live previews: progress events (and the snapshot of a job
        already running) carry the newest as `event.preview` bytes (`preview_mime`, `preview_step`); progress
        events carry the agent's time left as `eta_s` (docs/previews.md).
        """
        call = self._stub.Watch(jpb.WatchRequest(job_id=job_id, history=history), metadata=self._metadata,
                                timeout=timeout)
        try:
            for msg in call:
                yield event_from_pb(msg)
        except grpc.RpcError as exc:
            raise _error(exc, self.address, self._security) from None
        finally:
            call.cancel()

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job is done, failed or cancelled; TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"job {job_id} did not finish within {timeout}s")
            try:
                for event in self.watch(job_id, timeout=left):
                    if event.kind == "state" and event.state in TERMINAL:
                        return event.job or self.get(job_id)
                job = self.get(job_id)
                if job.terminal:
                    return job
            except CoordinatorUnavailable:
                time.sleep(_RECONNECT_S)  # the coordinator restarts: the job is safe in its store
            except CoordinatorError as exc:
                if exc.code != grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise


class AsyncJobsClient:
    """asyncio client of the coordinator's Jobs service."""

    def __init__(self, address: str, token: str = "", *, security: SecurityConfig | None = None,
                 timeout: float = 30.0) -> None:
        self.address = address
        self.timeout = timeout
        self._metadata = call_metadata(token)
        self._security = security
        opts, creds = _options(security)
        self._channel = grpc.aio.secure_channel(address, creds, options=opts) if creds else \
            grpc.aio.insecure_channel(address, options=opts)
        self._stub = jobs_pb2_grpc.JobsStub(self._channel)

    @classmethod
    def from_config(cls, cluster: ClusterConfig | str | Path | None = None, **kw: Any) -> AsyncJobsClient:
        address, token, security = _config_args(cluster)
        return cls(address, token, security=security, **kw)

    async def __aenter__(self) -> AsyncJobsClient:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, metadata=self._metadata, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise _error(exc, self.address, self._security) from None

    async def submit(self, spec: JobSpec | dict[str, Any], idempotency_key: str = "") -> str:
        return str((await self._call(self._stub.Submit, _submit_request(spec, idempotency_key))).job_id)

    async def get(self, job_id: str) -> Job:
        return job_from_pb(await self._call(self._stub.Get, jpb.GetJobRequest(job_id=job_id)))

    async def list(self, states: Iterable[str] | None = None, limit: int | None = 100) -> list[Job]:
        limit, jobs = limit or None, []
        request: jpb.ListJobsRequest | None = _list_request(states, limit)
        while request is not None:
            reply = await self._call(self._stub.List, request)
            jobs += [job_from_pb(j) for j in reply.jobs]
            request = _next_page(request, reply, len(jobs), limit)
        return jobs[:limit]

    async def cancel(self, job_id: str) -> Job:
        return job_from_pb(await self._call(self._stub.Cancel, jpb.CancelRequest(job_id=job_id)))

    async def retry(self, job_id: str) -> Job:
        return job_from_pb(await self._call(self._stub.Retry, jpb.RetryRequest(job_id=job_id)))

    async def watch(self, job_id: str = "", *, history: bool = False,
                    timeout: float | None = None) -> AsyncIterator[JobEvent]:
        call = self._stub.Watch(jpb.WatchRequest(job_id=job_id, history=history), metadata=self._metadata,
                                timeout=timeout)
        try:
            async for msg in call:
                yield event_from_pb(msg)
        except grpc.aio.AioRpcError as exc:
            raise _error(exc, self.address, self._security) from None
        finally:
            call.cancel()

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"job {job_id} did not finish within {timeout}s")
            try:
                async for event in self.watch(job_id, timeout=left):
                    if event.kind == "state" and event.state in TERMINAL:
                        return event.job or await self.get(job_id)
                job = await self.get(job_id)
                if job.terminal:
                    return job
            except CoordinatorUnavailable:
                await asyncio.sleep(_RECONNECT_S)
            except CoordinatorError as exc:
                if exc.code != grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise

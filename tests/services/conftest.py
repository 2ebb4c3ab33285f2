"""Two real agents (child processes on 127.0.0.1) shared by the service tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from artifex_agent.local_cluster import LocalCluster
from artifex_agent.transport import options
from artifex_agent.transport.methods import Rpc
from tests.processes import started

TOKEN = "test-token-7d1f"


@pytest.fixture(scope="session")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Agents 'gen' and 'post' with a shared token, serving the tiny two-expert model."""
    with started(LocalCluster(tmp_path_factory.mktemp("pair"), token=TOKEN)) as cluster:
        yield cluster


def outputs(cluster: LocalCluster, agent: str = "post") -> Path:
    return cluster.workdir / "outputs" / agent


@contextlib.asynccontextmanager
async def serving(rpc: Rpc, behaviour: Callable[..., Any]) -> AsyncIterator[str]:
    """An in-process server for one method, `rpc`'s row of the table (for what a child process cannot fake)."""
    server = grpc.aio.server(options=options.SERVER_OPTIONS)
    handler = grpc.method_handlers_generic_handler(rpc.service, {rpc.method: rpc.handler(behaviour)})
    server.add_generic_rpc_handlers([handler])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)

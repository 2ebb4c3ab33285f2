"""Server reflection on a real agent and a real coordinator process: what `grpcurl list`/`describe` sees.

Both run with a token: reflection answers only with it, like every other call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from artifex_agent.local_cluster import LocalCluster
from artifex_agent.transport import methods
from artifex_agent.transport.security import call_metadata
from tests.coordinator.conftest import Coordinator
from tests.processes import link_models, started, stop_together

TOKEN = "reflection-token-5e0b"
STANDARD = {health.SERVICE_NAME, reflection.SERVICE_NAME}


class Served(NamedTuple):
    address: str
    rpcs: tuple[methods.Rpc, ...]


@pytest.fixture(scope="module")
def served(models_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Served]]:
    """One agent and one coordinator (its only agent), both requiring TOKEN."""
    workdir = link_models(tmp_path_factory.mktemp("reflection"), models_root)
    with started(LocalCluster(workdir, agents={"solo": {"device": "cpu"}}, token=TOKEN)) as cluster:
        (workdir / "coordinator").mkdir()
        coordinator = Coordinator(workdir / "coordinator", cluster, token=TOKEN).start()
        try:
            yield {"agent": Served(cluster.address("solo"), methods.AGENT),
                   "coordinator": Served(coordinator.address, methods.JOBS)}
        finally:
            stop_together([coordinator.child] if coordinator.child is not None else [])


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: Any
    compression: Any


class _Header(grpc.StreamStreamClientInterceptor):
    """Adds `authorization: Bearer <token>` to each call, as `grpcurl -H` does."""

    def __init__(self, token: str) -> None:
        self.metadata = call_metadata(token)

    def intercept_stream_stream(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        sent = _Details(details.method, 10.0, (*(details.metadata or ()), *self.metadata), details.credentials,
                        details.wait_for_ready, details.compression)
        return continuation(sent, requests)


def _reflect(address: str, token: str) -> tuple[grpc.Channel, ProtoReflectionDescriptorDatabase]:
    channel = grpc.intercept_channel(grpc.insecure_channel(address), _Header(token))
    return channel, ProtoReflectionDescriptorDatabase(channel)


@pytest.mark.parametrize("process", ["agent", "coordinator"])
def test_reflection_lists_and_describes_every_rpc_of_the_table(served: dict[str, Served], process: str) -> None:
    address, rpcs = served[process]
    channel, db = _reflect(address, TOKEN)
    with channel:
        assert set(db.get_services()) == {*methods.services(rpcs), *STANDARD}
        pool = DescriptorPool(db)
        for rpc in rpcs:
            method = pool.FindServiceByName(rpc.service).methods_by_name[rpc.method]
            assert (method.client_streaming, method.server_streaming) == (rpc.request_streaming,
                                                                          rpc.response_streaming), rpc.path
            assert method.input_type.full_name == rpc.request.DESCRIPTOR.full_name
            assert method.output_type.full_name == rpc.response.DESCRIPTOR.full_name
            # Fields too, not just names: what grpcurl needs to build a request from JSON.
            assert [f.name for f in method.input_type.fields] == \
                [f.name for f in rpc.request.DESCRIPTOR.fields], rpc.path


@pytest.mark.parametrize("process", ["agent", "coordinator"])
@pytest.mark.parametrize("token", ["", "wrong-token"])
def test_reflection_without_the_token_is_refused(served: dict[str, Served], process: str, token: str) -> None:
    channel, db = _reflect(served[process].address, token)
    with channel, pytest.raises(grpc.RpcError) as refused:
        db.get_services()
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("process", ["agent", "coordinator"])
def test_reflection_v1_is_unimplemented_so_grpcurl_falls_back_to_v1alpha(served: dict[str, Served],
                                                                          process: str) -> None:
    # grpcurl asks grpc.reflection.v1 first and takes v1alpha only after UNIMPLEMENTED (not a hang or UNKNOWN).
    channel = grpc.insecure_channel(served[process].address)
    with channel:
        call = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
        with pytest.raises(grpc.RpcError) as refused:
            list(call(iter([b""]), metadata=call_metadata(TOKEN), timeout=10))
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED

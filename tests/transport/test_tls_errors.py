"""TLS and token mistakes are named as such (not "Socket closed" after a wait, not "cannot reach ...: OK")."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from artifex_agent.certs import make_certs
from artifex_agent.client import CoordinatorError, CoordinatorUnavailable, JobsClient
from artifex_agent.config import AgentConfig, ClusterConfig, SecurityConfig
from artifex_agent.health.agents import unreachable_reason
from artifex_agent.health.checks import HealthContext
from artifex_agent.transport.security import TokenInterceptor, server_credentials

TOKEN = "tls-token-91b2"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tls-errors")
    make_certs(root / "good", {"pc1": ["127.0.0.1"], "pc2": []})
    make_certs(root / "other", {"intruder": []})
    return root


def _security(certs: Path, pair: str, ca: str, token: str = "") -> SecurityConfig:
    folder = "other" if pair == "intruder" else "good"
    return SecurityConfig(token=token, tls_cert=str(certs / folder / f"{pair}.pem"),
                          tls_key=str(certs / folder / f"{pair}.key"), tls_ca=str(certs / ca / "ca.pem"))


@pytest.fixture(scope="module")
def mtls_address(certs: Path) -> Iterator[str]:
    """A real gRPC server with the agent's mTLS credentials and token check, on its own loop and thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> tuple[grpc.aio.Server, int]:
        # Built inside its loop: an aio server belongs to the loop it was made in.
        server = grpc.aio.server(interceptors=[TokenInterceptor(TOKEN)])
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        port = server.add_secure_port("127.0.0.1:0", server_credentials(_security(certs, "pc1", "good")))
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(None), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def _health_error(address: str, security: SecurityConfig) -> tuple[str, str, float]:
    """What `health` says about the agent at `address`: (reason, what to do, seconds taken)."""
    cluster = ClusterConfig(agents=[AgentConfig(name="pc1", listen=address)], security=security)

    async def go() -> tuple[str, str, float]:
        ctx = HealthContext(cluster, connect_timeout=5.0)
        t0 = time.perf_counter()
        try:
            await ctx.connect()
        finally:
            await ctx.close()
        agent = ctx.agents[0]
        return (*unreachable_reason(agent), time.perf_counter() - t0) if not agent.serving else ("SERVING", "", 0.0)

    return asyncio.run(go())


def test_a_client_without_a_certificate_is_told_the_agent_wants_one(mtls_address: str) -> None:
    reason, fix, seconds = _health_error(mtls_address, SecurityConfig(token=TOKEN))
    # Was: "cannot reach 127.0.0.1:N: Socket closed" (and the CLI waited 9 s for it).
    assert reason.startswith("TLS: the agent at") and "wants a client certificate signed by its CA (tls_ca)" in reason
    assert "artifex-agent certs" in fix and seconds < 3
    with JobsClient(mtls_address, TOKEN, timeout=5) as client, pytest.raises(CoordinatorError) as err:
        client.get("x")
    assert not isinstance(err.value, CoordinatorUnavailable)  # not retried as if the coordinator restarted
    assert "TLS: the coordinator at" in str(err.value) and "wants a client certificate" in str(err.value)


def test_a_certificate_from_another_ca_is_named(certs: Path, mtls_address: str) -> None:
    # Trusting only its own CA: the agent's certificate fails here (was "cannot reach …: OK").
    reason, _, _ = _health_error(mtls_address, _security(certs, "intruder", "other"))
    assert reason.startswith("TLS:") and "not signed by this PC's CA" in reason
    # Trusting the right CA, but presenting a certificate the agent's CA did not sign: the agent hangs up.
    intruder = _security(certs, "intruder", "good", TOKEN)
    reason, _, _ = _health_error(mtls_address, intruder)
    assert reason.startswith("TLS:") and "refused this PC's certificate" in reason and "intruder.pem" in reason
    with JobsClient(mtls_address, TOKEN, security=intruder, timeout=5) as client, \
            pytest.raises(CoordinatorError, match="refused this PC's certificate"):
        client.get("x")


def test_a_wrong_token_is_named_and_the_right_pair_gets_in(certs: Path, mtls_address: str) -> None:
    good = _security(certs, "pc2", "good", "not-the-token")
    reason, fix, _ = _health_error(mtls_address, good)
    assert "refused the token" in reason and "same [security] token" in fix
    with JobsClient(mtls_address, "not-the-token", security=good, timeout=5) as client, \
            pytest.raises(CoordinatorError, match="the coordinator at .* refused the token"):
        client.get("x")
    assert _health_error(mtls_address, _security(certs, "pc2", "good", TOKEN))[0] == "SERVING"

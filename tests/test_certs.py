"""`artifex-agent certs` and mutual TLS: a client with a certificate from the CA gets in, others do not."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from artifex_agent.certs import TLS_NAME, make_certs
from artifex_agent.cli.main import main
from artifex_agent.config import ClusterConfig, SecurityConfig
from artifex_agent.errors import ArtifexError
from artifex_agent.health.checks import run_health
from artifex_agent.launcher import ChildProcess, start_agent
from artifex_agent.local_cluster import write_cluster_toml
from artifex_agent.transport.channel import AgentStub, open_channel


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_certs_cli_makes_a_ca_and_one_cert_per_agent_with_the_tls_name_and_ips(tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture) -> None:
    cfg = write_cluster_toml(tmp_path / "c.toml", {"pc1": {"listen": "10.0.0.1:50051"},
                                                    "pc2": {"listen": "0.0.0.0:50051", "address": "10.0.0.2:50051"}},
                             security={"token": "t"})
    out = tmp_path / "certs"
    assert main(["certs", "--config", str(cfg), "--out", str(out)]) == 0
    assert "tls_cert" in capsys.readouterr().out
    ca = _cert(out / "ca.pem")
    for name, ip in (("pc1", "10.0.0.1"), ("pc2", "10.0.0.2")):
        cert = _cert(out / f"{name}.pem")
        assert cert.issuer == ca.subject
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert TLS_NAME in san.get_values_for_type(x509.DNSName)
        assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == [ip]
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usage)
        assert stat.S_IMODE((out / f"{name}.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "ca.key").stat().st_mode) == 0o600
    # A second run reuses the CA and refuses to overwrite a certificate without --force.
    with pytest.raises(ArtifexError, match="--force"):
        make_certs(out, {"pc1": []})
    _, created, issued = make_certs(out, {"pc3": ["10.0.0.3"]})
    assert not created and _cert(issued[0].cert).issuer == ca.subject


@pytest.fixture(scope="module")
def tls_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """An agent on loopback with TLS and a CA: client certificates required."""
    tmp = tmp_path_factory.mktemp("mtls")
    certs = tmp / "certs"
    make_certs(certs, {"pc1": ["127.0.0.1"], "pc2": []})
    make_certs(tmp / "other", {"intruder": []})
    cfg = write_cluster_toml(tmp / "c.toml", {"pc1": {"listen": "127.0.0.1:0", "device": "cpu",
                                                      "models_root": str(tmp / "models"),
                                                      "output_root": str(tmp / "out")}},
                             security={"tls_cert": str(certs / "pc1.pem"), "tls_key": str(certs / "pc1.key"),
                                       "tls_ca": str(certs / "ca.pem")})
    child: ChildProcess = start_agent(cfg, "pc1", tmp)
    try:
        yield f"127.0.0.1:{child.port}", tmp
    finally:
        child.stop()


async def _info(address: str, security: SecurityConfig | None, creds: grpc.ChannelCredentials | None = None) -> str:
    if creds is not None:
        channel = grpc.aio.secure_channel(address, creds, options=[("grpc.ssl_target_name_override", TLS_NAME)])
    else:
        channel = open_channel(address, security)
    try:
        return (await AgentStub(channel).info(timeout=5)).name
    finally:
        await channel.close()


def test_a_client_with_a_certificate_from_the_ca_is_served(tls_agent: tuple[str, Path]) -> None:
    address, tmp = tls_agent
    c = tmp / "certs"
    security = SecurityConfig(tls_cert=str(c / "pc2.pem"), tls_key=str(c / "pc2.key"), tls_ca=str(c / "ca.pem"))
    assert asyncio.run(_info(address, security)) == "pc1"


def test_a_client_without_a_certificate_is_refused(tls_agent: tuple[str, Path]) -> None:
    address, tmp = tls_agent
    creds = grpc.ssl_channel_credentials(root_certificates=(tmp / "certs" / "ca.pem").read_bytes())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        asyncio.run(_info(address, None, creds))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_certificate_from_another_ca_is_refused(tls_agent: tuple[str, Path]) -> None:
    address, tmp = tls_agent
    o = tmp / "other"
    creds = grpc.ssl_channel_credentials(root_certificates=(tmp / "certs" / "ca.pem").read_bytes(),
                                         private_key=(o / "intruder.key").read_bytes(),
                                         certificate_chain=(o / "intruder.pem").read_bytes())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        asyncio.run(_info(address, None, creds))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_plaintext_client_is_refused(tls_agent: tuple[str, Path]) -> None:
    address, _ = tls_agent
    with pytest.raises(grpc.aio.AioRpcError) as err:
        asyncio.run(_info(address, SecurityConfig()))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_health_reaches_a_tls_agent_with_this_pcs_certificate(tls_agent: tuple[str, Path],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    address, tmp = tls_agent
    c = tmp / "certs"
    # The cluster file is shared by both PCs; each PC points at its own pair through the environment.
    monkeypatch.setenv("ARTIFEX_TLS_CERT", str(c / "pc2.pem"))
    monkeypatch.setenv("ARTIFEX_TLS_KEY", str(c / "pc2.key"))
    cluster = ClusterConfig.from_dict({"agents": {"pc1": {"listen": address, "device": "cpu", "roles": ["post"]}},
                                       "security": {"tls_ca": str(c / "ca.pem"), "tls_cert": "unused",
                                                    "tls_key": "unused"}})
    report = asyncio.run(run_health(cluster, quick=True, rtt_count=20))
    row = next(r for r in report.results if r.name == "agent pc1")
    assert row.ok, row

"""A small CA and one certificate per agent, for mutual TLS on the link.

Every agent certificate names "artifex-agent" (channels override the TLS target name to
it, so a PC can be dialled by any address) plus the agent's IPs, and is valid for both
server and client use: an agent serves with it and presents it when it dials its peer.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from artifex_agent.errors import ArtifexError
from artifex_agent.newfile import replacing

logger = logging.getLogger(__name__)

TLS_NAME = "artifex-agent"
CA_CERT = "ca.pem"
CA_KEY = "ca.key"
CA_DAYS = 3650
AGENT_DAYS = 825  # the longest leaf lifetime common TLS stacks accept without complaint


@dataclass
class Issued:
    """Files written for one agent."""

    name: str
    cert: Path
    key: Path
    ips: list[str]


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` readable by its owner only (mode 0600), also on first creation."""
    # Keys are created 0600 from the start, not chmod-ed after being readable for a moment, and never
    # written through a link planted at `path`.
    with replacing(path, 0o600) as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "artifex-agent"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def load_or_create_ca(out: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, bool]:
    """The CA in `out` (ca.pem, ca.key), created when absent; (cert, key, created)."""
    cert_path, key_path = out / CA_CERT, out / CA_KEY
    if cert_path.exists() and key_path.exists():
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (ValueError, OSError) as exc:
            raise ArtifexError(f"cannot read the CA in {out}: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ArtifexError(f"{key_path} is not a key this tool made (EC P-256 expected)")
        return cert, key, False
    if cert_path.exists() or key_path.exists():
        raise ArtifexError(f"{out} has only one of {CA_CERT} and {CA_KEY}; remove it or restore the other")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("artifex-agent CA")).issuer_name(_name("artifex-agent CA"))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    out.mkdir(parents=True, exist_ok=True)
    write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    logger.info("created CA %s", cert_path)
    return cert, key, True


def issue(out: Path, name: str, ips: list[str], ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
          *, force: bool = False) -> Issued:
    """Write NAME.pem and NAME.key, signed by the CA, for TLS_NAME, `name` and `ips`."""
    cert_path, key_path = out / f"{name}.pem", out / f"{name}.key"
    if (cert_path.exists() or key_path.exists()) and not force:
        raise ArtifexError(f"{cert_path} already exists; pass --force to replace it")
    try:
        addresses = [ipaddress.ip_address(ip) for ip in ips]
    except ValueError as exc:
        raise ArtifexError(f"agent {name}: {exc}") from None
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    sans: list[x509.GeneralName] = [x509.DNSName(TLS_NAME), x509.DNSName(name)]
    sans += [x509.IPAddress(a) for a in addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name)).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=AGENT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                                     crl_sign=False, content_commitment=False, data_encipherment=False,
                                     key_agreement=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Issued(name, cert_path, key_path, [str(a) for a in addresses])


def make_certs(out: Path, agents: dict[str, list[str]], *, force: bool = False) -> tuple[Path, bool, list[Issued]]:
    """The CA (reused when present) and one certificate per agent; (ca.pem, created, issued)."""
    if not agents:
        raise ArtifexError("name at least one agent (--agents pc1,pc2)")
    ca_cert, ca_key, created = load_or_create_ca(out)
    return out / CA_CERT, created, [issue(out, name, ips, ca_cert, ca_key, force=force)
                                    for name, ips in agents.items()]


def security_snippet(out: Path, name: str) -> str:
    """The [security] lines the PC running `name` puts in its config (paths on that PC)."""
    return (f'[security]\ntls_ca = "{out / CA_CERT}"\ntls_cert = "{out / f"{name}.pem"}"\n'
            f'tls_key = "{out / f"{name}.key"}"\n')

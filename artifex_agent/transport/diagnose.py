"""Name TLS and token mistakes behind a failed call, instead of gRPC's "Socket closed" or "...: OK".

gRPC reports a refused client certificate as a closed socket, indistinguishable from a process
that died; so when a call fails that way, one TLS handshake with Python's ssl module (same
files, ALPN h2) asks the port itself: whether it speaks TLS, and whether it keeps a connection
that presented this PC's certificate (it sends its HTTP/2 settings) or closes it.
"""

from __future__ import annotations

import logging
import socket
import ssl
from pathlib import Path

import grpc

from artifex_agent.config import SecurityConfig, split_hostport

logger = logging.getLogger(__name__)

# The HTTP/2 client preface and an empty SETTINGS frame: a server that accepted the handshake answers.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
CERTS_HINT = "`artifex-agent certs --out DIR` issues every PC's pair from one CA (DIR/ca.pem)"


def explain(exc: grpc.RpcError, address: str, security: SecurityConfig | None, who: str = "the agent",
            timeout_s: float = 2.0) -> str | None:
    """What TLS or token mistake `exc` (a failed call to `address`) comes from; None when it is neither."""
    code = exc.code()  # type: ignore[attr-defined]
    details = exc.details() or ""  # type: ignore[attr-defined]
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return token_refused(who, address, details)
    if code != grpc.StatusCode.UNAVAILABLE:
        return None
    security = security or SecurityConfig()
    return tls_problem(details, address, security, who, timeout_s)


def token_refused(who: str, address: str, details: str) -> str:
    """The message for an UNAUTHENTICATED answer: whose token, and what to make equal."""
    return (f"{who} at {address} refused the token ({details or 'UNAUTHENTICATED'}): use the same [security] "
            "token or token_file contents (or ARTIFEX_TOKEN) on every PC")


def tls_problem(details: str, address: str, security: SecurityConfig, who: str = "the agent",
                timeout_s: float = 2.0) -> str | None:
    """A TLS mismatch named from gRPC's `details`, probing `address` when they only say the socket closed."""
    if "CERTIFICATE_VERIFY_FAILED" in details:
        return (f"TLS: {who}'s certificate at {address} is not signed by this PC's CA (tls_ca "
                f"{security.tls_ca or 'not set'}): use the ca.pem that issued the agents' certificates; {CERTS_HINT}")
    if "WRONG_VERSION_NUMBER" in details:
        return (f"TLS: {who} at {address} does not speak TLS, but this PC is set up for it (tls_cert/tls_key): "
                "set the same [security] tls_* files on both ends, or none")
    if "Socket closed" not in details and "Connection reset" not in details:
        return None
    try:
        speaks_tls, kept = _handshake(address, security, timeout_s)
    except (OSError, ssl.SSLError, ValueError) as exc:
        logger.debug("TLS probe of %s: %s", address, exc)
        return None
    if not speaks_tls or kept and security.tls:
        return None  # TLS is not the problem
    if not security.tls:
        wants = "wants a client certificate signed by its CA (tls_ca)" if not kept else "speaks TLS"
        return (f"TLS: {who} at {address} {wants}, and this PC has none: set [security] tls_ca, tls_cert and "
                f"tls_key (or ARTIFEX_TLS_CA/_CERT/_KEY) to this PC's files; {CERTS_HINT}")
    return (f"TLS: {who} at {address} refused this PC's certificate ({security.tls_cert}): it wants one signed by "
            f"its CA (tls_ca), and this one is not; {CERTS_HINT}")


def _handshake(address: str, security: SecurityConfig, timeout_s: float) -> tuple[bool, bool]:
    """(the port speaks TLS, it kept the connection after our certificate, or none, was presented)."""
    from artifex_agent.certs import TLS_NAME  # cryptography loads only when a probe runs, not per CLI start

    host, port = split_hostport(address)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Only the server's answer to us matters here; gRPC itself checks the server's certificate.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    if security.tls:
        ctx.load_cert_chain(Path(security.tls_cert).expanduser(), Path(security.tls_key).expanduser())
    with socket.create_connection((host, port), timeout=timeout_s) as raw:
        try:
            tls = ctx.wrap_socket(raw, server_hostname=TLS_NAME)
        except (ssl.SSLError, ConnectionError):
            return False, False
        with tls:
            try:
                tls.sendall(_H2_PREFACE)
                return True, bool(tls.recv(9))
            except (ssl.SSLError, ConnectionError):
                return True, False


"""Which hosts are this machine (loopback names, its interfaces' addresses, resolved names), and host:port."""

from __future__ import annotations

import ipaddress
import socket

import psutil

from artifex_agent.errors import ConfigError

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def host_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP of `host` (a literal, or resolved); None when it does not resolve."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.ip_address(socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)[0][4][0])
    except (OSError, IndexError, ValueError):
        return None


def local_addresses() -> set[str]:
    """Every address of this machine's interfaces (and the loopback names)."""
    found = set(LOOPBACK_NAMES)
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                found.add(a.address.split("%")[0])
    return found


def is_loopback_host(host: str) -> bool:
    """True when `host` names loopback without a lookup (`localhost`, `::1`, `127.*`)."""
    return host in ("localhost", "::1") or host.startswith("127.")


def is_local_host(host: str, here: set[str] | None = None) -> bool:
    """True when `host` is loopback or one of this machine's addresses (`here`, by default all of them)."""
    here = local_addresses() if here is None else here
    if is_loopback_host(host) or host in here:
        return True
    ip = host_ip(host)
    if ip is None:
        return False
    return ip.is_loopback or ip.is_unspecified or str(ip) in here


def split_hostport(address: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port), with a clear error."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"address {address!r} must look like host:port")
    return host.strip("[]"), int(port)


def is_loopback(address: str) -> bool:
    """True when `address` only listens on this machine."""
    return is_loopback_host(split_hostport(address)[0])

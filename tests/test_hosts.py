"""Which hosts are this machine: the one answer `up`, `health` and the config share."""

from __future__ import annotations

from artifex_agent.config import is_loopback
from artifex_agent.hosts import is_local_host, is_loopback_host, local_addresses


def test_loopback_and_own_addresses_are_local() -> None:
    assert is_local_host("127.0.0.1") and is_local_host("localhost") and is_local_host("::1")
    assert is_local_host("0.0.0.0")
    assert all(is_local_host(address) for address in local_addresses())
    assert not is_local_host("192.0.2.1")


def test_the_given_addresses_stand_for_this_machine() -> None:
    assert is_local_host("10.0.0.1", {"10.0.0.1"}) and not is_local_host("10.0.0.2", {"10.0.0.1"})
    assert is_local_host("127.0.0.5", set())


def test_loopback_needs_no_lookup() -> None:
    assert is_loopback_host("127.1.2.3") and is_loopback_host("localhost") and not is_loopback_host("10.0.0.1")
    assert is_loopback("127.0.0.1:50051") and not is_loopback("0.0.0.0:50051")

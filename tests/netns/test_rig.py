"""The rig itself: two hosts that reach each other only over their link, removed whatever happens."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.netns.rig import TwoHosts, unavailable

pytestmark = pytest.mark.netns


def _namespaces() -> set[str]:
    return set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())


@pytest.fixture(autouse=True)
def _need_rig() -> None:
    reason = unavailable()
    if reason:
        pytest.skip(reason)


def test_rig_is_removed_even_when_the_test_body_fails(tmp_path: Path) -> None:
    names: list[str] = []
    with pytest.raises(RuntimeError, match="boom"):
        with TwoHosts(tmp_path, start_agents=False) as rig:
            names = [rig.a.ns, rig.b.ns]
            assert set(names) <= _namespaces()
            ping = rig.run_in("a", ["ping", "-c", "1", "-W", "1", rig.b.ip])
            assert ping.returncode == 0, ping.stdout + ping.stderr
            raise RuntimeError("boom")
    assert not set(names) & _namespaces()


def test_two_rigs_get_different_names(tmp_path: Path) -> None:
    first, second = TwoHosts(tmp_path / "1"), TwoHosts(tmp_path / "2")
    assert {first.a.ns, first.b.ns}.isdisjoint({second.a.ns, second.b.ns})
    assert first.a.iface != second.a.iface
    assert first.a.ns.startswith("artx") and len(first.a.iface) <= 15


def test_the_machines_own_namespace_cannot_reach_the_rig(tmp_path: Path) -> None:
    with TwoHosts(tmp_path, start_agents=False) as rig:
        here = subprocess.run(["ip", "route", "get", rig.b.ip], capture_output=True, text=True).stdout
        assert rig.a.iface not in here and rig.b.iface not in here

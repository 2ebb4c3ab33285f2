"""`two_hosts`: namespaces A and B on a veth link, an agent in each; `four_hosts`: a to d on one bridge
(see tests/netns/rig.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns.rig import Hosts, TwoHosts, unavailable
from tests.processes import held, session_ending


@pytest.fixture(scope="session")
def _two_hosts_session(tmp_path_factory: pytest.TempPathFactory, models_root: Path) -> Iterator[TwoHosts]:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    # Built once per session (two agents take seconds to start on two cores); removed at the
    # end, on failure, and at interpreter exit (TwoHosts registers atexit).
    with TwoHosts(tmp_path_factory.mktemp("two-hosts"), models_root=models_root) as rig, \
            held(lambda: list(rig.agents.values())):
        yield rig


@pytest.fixture
def two_hosts(_two_hosts_session: TwoHosts) -> Iterator[TwoHosts]:
    """The shared rig, put back to a healthy link after each test whatever the test did."""
    rig = _two_hosts_session
    rig.reset()
    try:
        yield rig
    finally:
        rig.reset()
        stopped = any(c.proc is None or c.proc.poll() is not None for c in rig.agents.values())
        if stopped and not session_ending():
            rig.start_agents()  # a test stopped one: the next test gets both back


@pytest.fixture
def rig(two_hosts: TwoHosts) -> Iterator[TwoHosts]:
    """The shared rig; coordinators a test starts are stopped at its end."""
    try:
        yield two_hosts
    finally:
        two_hosts.stop_coordinators()


@pytest.fixture(scope="session")
def _four_hosts_session(tmp_path_factory: pytest.TempPathFactory, models_root: Path) -> Iterator[Hosts]:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    with Hosts(tmp_path_factory.mktemp("four-hosts"), n=4, models_root=models_root) as rig, \
            held(lambda: list(rig.agents.values())):
        yield rig


@pytest.fixture
def four_hosts(_four_hosts_session: Hosts) -> Iterator[Hosts]:
    """Hosts a, b, c, d on one bridge, an agent in each from the rig's cluster file; links put back after each test.

    An agent a test stopped or started from another file is restarted when the next test begins, not when
    the test ends: the last test's leftovers cost nothing (each agent takes seconds to start on two cores)."""
    rig = _four_hosts_session
    rig.reset()
    restart = rig.agents_to_restart()
    if restart:
        rig.start_agents(restart)
    try:
        yield rig
    finally:
        rig.stop_coordinators()
        rig.reset()

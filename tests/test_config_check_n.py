"""`config check` with N PCs: duplicate addresses and MTU mismatches between members, topologies."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from artifex_agent.cli.main import main
from artifex_agent.config import ClusterConfig
from artifex_agent.errors import ConfigError
from artifex_agent.render import render_cluster
from tests.render.conftest import EXAMPLE

SWITCH = EXAMPLE.with_name("cluster-switch.toml")
# pc4 on pc3's address, on another port (its metrics port too, or the port check speaks first).
PC4_ON_PC3 = (('listen = "10.0.0.4:50051"', 'listen = "10.0.0.3:50052"'),
              ("metrics_port = 9101\n\n[coordinator]", "metrics_port = 9103\n\n[coordinator]"))


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    # The example's token file is not on this machine; the token itself is not what these tests are about.
    monkeypatch.setenv("ARTIFEX_TOKEN", "t")
    for name in ("ARTIFEX_TLS_CERT", "ARTIFEX_TLS_KEY", "ARTIFEX_TLS_CA"):
        monkeypatch.delenv(name, raising=False)


def _check(tmp_path: Path, capsys: pytest.CaptureFixture[str], *changes: tuple[str, str],
           source: Path = SWITCH) -> tuple[int, list[str]]:
    text = source.read_text()
    for old, new in changes:
        assert old in text, old
        text = re.sub(re.escape(old), new, text, count=1)
    (tmp_path / "c.toml").write_text(text)
    rc = main(["config", "check", "--config", str(tmp_path / "c.toml")])
    return rc, [line.strip().removeprefix("- ") for line in capsys.readouterr().out.splitlines()[1:]]


def test_the_switch_example_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, problems = _check(tmp_path, capsys)
    assert (rc, problems) == (0, [])


def test_two_pcs_given_one_address_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, problems = _check(tmp_path, capsys, *PC4_ON_PC3)
    assert rc == 1
    assert problems == ["10.0.0.3 is given to agents.pc3 (enp5s0), agents.pc4 (enp1s0f0): agents on one address "
                        "are one PC with one link NIC; give every PC its own address on the subnet"]


def test_two_gpus_of_one_pc_share_its_address(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The same NIC: one PC with two agents, which is fine.
    rc, problems = _check(tmp_path, capsys, *PC4_ON_PC3, ('interface = "enp1s0f0"', 'interface = "enp5s0"'))
    assert (rc, problems) == (0, [])


def test_agents_dialled_at_one_address_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, problems = _check(tmp_path, capsys,
                          ('listen = "10.0.0.3:50051"', 'listen = "0.0.0.0:50051"\naddress = "10.0.0.4:50051"'))
    assert rc == 1
    assert "agents.pc4 and agents.pc3 are both reached at 10.0.0.4:50051: give each its own address (or port)" \
        in problems


def test_the_subnet_and_broadcast_addresses_are_not_a_pcs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, problems = _check(tmp_path, capsys, ('listen = "10.0.0.4:50051"', 'listen = "10.0.0.255:50051"'))
    assert rc == 1
    assert problems == ["agents.pc4: 10.0.0.255 is the broadcast address of 10.0.0.0/24, not a host's: "
                        "use one of 10.0.0.1–10.0.0.254"]


def test_an_mtu_mismatch_between_members_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, problems = _check(tmp_path, capsys, ('listen = "10.0.0.3:50051"', 'listen = "10.0.0.3:50051"\nmtu = 1500'))
    assert rc == 1
    assert problems == ["MTU differs between the PCs of the link (9000: pc1 (10.0.0.1), pc2 (10.0.0.2), "
                        "pc4 (10.0.0.4); 1500: pc3 (10.0.0.3)): every member (and the switch) needs one MTU; "
                        "set [network] mtu = 1500 and drop the agents' own mtu, or raise the smaller NICs to 9000"]
    # The same MTU said twice is no mismatch.
    rc, problems = _check(tmp_path, capsys, ('listen = "10.0.0.3:50051"', 'listen = "10.0.0.3:50051"\nmtu = 9000'))
    assert (rc, problems) == (0, [])


def test_an_agent_mtu_out_of_range_is_refused_at_load() -> None:
    with pytest.raises(ConfigError, match=r"agents.a: mtu 100 is outside 576–9216 \(0: \[network\] mtu\)"):
        ClusterConfig.from_dict({"agents": {"a": {"mtu": 100}}})


def test_three_pcs_on_a_direct_cable_need_a_switch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, problems = _check(tmp_path, capsys, ('topology = "switch"', ""))
    assert rc == 1
    assert problems == ['[network] topology = "direct" joins two PCs with one cable, but the agents are on 4 '
                        '(10.0.0.1, 10.0.0.2, 10.0.0.3, 10.0.0.4): set topology = "switch"']


def test_an_unknown_topology_is_refused_and_never_rendered() -> None:
    with pytest.raises(ConfigError, match="topology must be 'direct' or 'switch', not 'ring'"):
        ClusterConfig.from_dict({"network": {"topology": "ring"}})
    cluster = ClusterConfig.load(SWITCH)
    cluster.network.topology = "ring"
    with pytest.raises(ConfigError, match="topology"):
        render_cluster(cluster)


def test_the_two_pc_example_still_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, problems = _check(tmp_path, capsys, source=EXAMPLE)
    assert (rc, problems) == (0, [])

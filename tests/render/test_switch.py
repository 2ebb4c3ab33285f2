"""`config render` for four PCs on one switch (examples/cluster-switch.toml), beside the direct cable."""

from __future__ import annotations

import configparser
import hashlib
import subprocess
from pathlib import Path

import pytest
import yaml

from artifex_agent.config import ClusterConfig
from artifex_agent.render import build_plan, render_cluster
from tests.render.conftest import EXAMPLE, assert_samba_accepts, body

SWITCH = EXAMPLE.with_name("cluster-switch.toml")
MEMBERS = {"pc1": "10.0.0.1", "pc2": "10.0.0.2", "pc3": "10.0.0.3", "pc4": "10.0.0.4"}


@pytest.fixture(scope="module")
def switch() -> dict[str, str]:
    return {f.path: f.content for f in render_cluster(ClusterConfig.load(SWITCH))}


def _others(name: str) -> list[str]:
    return [ip for pc, ip in MEMBERS.items() if pc != name]


def test_every_pc_gets_its_own_address_and_jumbo_frames(switch: dict[str, str]) -> None:
    plan = build_plan(ClusterConfig.load(SWITCH))
    assert plan.switch and [(h.name, h.ip, h.mtu) for h in plan.hosts] == [(n, ip, 9000) for n, ip in MEMBERS.items()]
    for name, nic in (("pc1", "enp3s0f0"), ("pc3", "enp5s0"), ("pc4", "enp1s0f0")):
        doc = yaml.safe_load(switch[f"{name}/netplan/01-artifex-10gbe.yaml"])["network"]["ethernets"][nic]
        assert doc["addresses"] == [f"{MEMBERS[name]}/24"] and doc["mtu"] == 9000
        assert 'step ip link set "$IFACE" mtu 9000' in body(switch[f"{name}/ethtool/artifex-network-tune.sh"])
    ps1 = switch["pc2/powershell/network.ps1"]
    assert "-RegistryValue 9014" in ps1 and "-NlMtuBytes 9000" in ps1
    # The Windows PC checks that a 9000-byte packet reaches every other member unfragmented.
    assert [line for line in ps1.splitlines() if line.startswith("ping.exe")] == \
        [f"ping.exe -n 2 -f -l 8972 {ip}" for ip in _others("pc2")]
    index = switch["README.txt"]
    assert "switch/  one port per PC" in index and "at least 9018 bytes" in index
    assert all(f"{ip:<15} NIC" in index for ip in MEMBERS.values())


@pytest.mark.parametrize("name", ["pc1", "pc3", "pc4"])
def test_ufw_admits_each_member_pc_not_the_subnet(switch: dict[str, str], name: str, tmp_path: Path) -> None:
    script = switch[f"{name}/ufw/artifex-ufw.sh"]
    rules = [line for line in body(script) if line.startswith("ufw allow")]
    assert "10.0.0.0/24" not in script
    sources = {rule.split(" from ")[1].split()[0] for rule in rules}
    assert sources == set(_others(name))
    # Every port is opened to every other member: the agent's port from each of them.
    assert sorted(r.split(" from ")[1].split()[0] for r in rules if "port 50051 " in r) == _others(name)
    (tmp_path / "ufw.sh").write_text(script)
    assert subprocess.run(["bash", "-n", str(tmp_path / "ufw.sh")]).returncode == 0


def test_windows_firewall_names_the_members(switch: dict[str, str]) -> None:
    ps1 = switch["pc2/powershell/network.ps1"]
    assert "$Members = @('10.0.0.1', '10.0.0.3', '10.0.0.4')" in ps1
    assert "RemoteAddress = $Members" in ps1 and "$Subnet" not in ps1


def test_exports_and_shares_serve_every_member(switch: dict[str, str], tmp_path: Path) -> None:
    exports = [line.split() for line in body(switch["pc1/nfs/exports"])]
    assert [line[0] for line in exports] == ["/exports/projects", "/exports/cache", "/exports/models"]
    for line in exports:
        assert [client.split("(")[0] for client in line[1:]] == _others("pc1")
    assert all("(ro," in client for client in exports[2][1:])
    conf = configparser.ConfigParser(comment_prefixes=("#", ";"))
    conf.read_string(switch["pc1/samba/smb-artifex.conf"])
    assert conf["projects"]["hosts allow"] == "10.0.0.2 10.0.0.3 10.0.0.4 127.0.0.1"
    assert_samba_accepts(switch["pc1/samba/smb-artifex.conf"], tmp_path)


def test_the_other_linux_pcs_mount_the_shares(switch: dict[str, str]) -> None:
    for name in ("pc3", "pc4"):
        assert body(switch[f"{name}/mounts/fstab-artifex-shares"]) == [
            "10.0.0.1:/exports/projects /data/projects nfs4 rw,hard,noatime,_netdev,nofail 0 0",
            "10.0.0.1:/exports/cache /data/cache nfs4 rw,hard,noatime,_netdev,nofail 0 0",
            "10.0.0.1:/exports/models /data/models nfs4 ro,hard,noatime,_netdev,nofail 0 0",
        ]
    # The server mounts nothing; Windows keeps its PowerShell mounts.
    assert not any(path.startswith(("pc1/mounts", "pc2/mounts")) for path in switch)
    assert "pc2/powershell/mount-shares.ps1" in switch


def test_smb_members_mount_with_cifs(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(SWITCH.read_text().replace('protocol = "nfs"', 'protocol = "smb"'))
    files = {f.path: f.content for f in render_cluster(ClusterConfig.load(tmp_path / "c.toml"))}
    lines = body(files["pc3/mounts/fstab-artifex-shares"])
    assert lines[0].startswith("//10.0.0.1/projects /data/projects cifs credentials=")
    assert lines[2].endswith(",ro 0 0")
    assert files["pc3/ufw/artifex-ufw.sh"].count("port 445") == 0  # only the share server opens SMB
    assert files["pc1/ufw/artifex-ufw.sh"].count("to any port 445 proto tcp") == 3


def test_an_agent_mtu_is_what_its_pc_gets(tmp_path: Path) -> None:
    text = SWITCH.read_text().replace('listen = "10.0.0.3:50051"', 'listen = "10.0.0.3:50051"\nmtu = 4000')
    (tmp_path / "c.toml").write_text(text)
    files = {f.path: f.content for f in render_cluster(ClusterConfig.load(tmp_path / "c.toml"))}
    assert yaml.safe_load(files["pc3/netplan/01-artifex-10gbe.yaml"])["network"]["ethernets"]["enp5s0"]["mtu"] == 4000
    assert "mtu: 9000" in files["pc4/netplan/01-artifex-10gbe.yaml"]
    assert "at least 9018 bytes" in files["README.txt"]


def _digest(cluster: ClusterConfig, source: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(render_cluster(cluster), key=lambda f: f.path):
        h.update(f.path.encode() + b"\0" + f.content.replace(str(source), "examples/cluster.toml").encode() + b"\0")
    return h.hexdigest()


def test_the_direct_cable_output_is_byte_identical_to_before_switches(tmp_path: Path) -> None:
    # Every file rendered from the seed's two-PC file, as it was before [network] topology existed; saying
    # topology = "direct" (the default) changes nothing either. A deliberate change to a direct-cable file
    # updates this digest in the same commit.
    before = "4cb598f2ea9b0b18db64f1b90497e69cdc12315684e0da8b9decefb4bd6d8f8b"
    assert _digest(ClusterConfig.load(EXAMPLE), EXAMPLE) == before
    said = tmp_path / "c.toml"
    said.write_text(EXAMPLE.read_text().replace("[network]\n", '[network]\ntopology = "direct"\n'))
    assert _digest(ClusterConfig.load(said), said) == before


def test_a_coordinator_on_a_pc_of_its_own_is_a_member_too(tmp_path: Path) -> None:
    # It dials every agent, and the watcher beside it reads the shares.
    (tmp_path / "c.toml").write_text(SWITCH.read_text().replace('listen = "10.0.0.1:50050"',
                                                                'listen = "10.0.0.9:50050"'))
    files = {f.path: f.content for f in render_cluster(ClusterConfig.load(tmp_path / "c.toml"))}
    agent = [r for r in body(files["pc3/ufw/artifex-ufw.sh"]) if "port 50051 " in r]
    assert [r.split(" from ")[1].split()[0] for r in agent] == ["10.0.0.1", "10.0.0.2", "10.0.0.4", "10.0.0.9"]
    assert body(files["pc1/nfs/exports"])[0].split()[-1].startswith("10.0.0.9(rw,")
    assert "'10.0.0.9'" in files["pc2/powershell/network.ps1"]

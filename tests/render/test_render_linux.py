"""PC1's rendered files carry the seed's values: address, MTU, sysctls, ethtool, exports, smb, ufw."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from artifex_agent.config import ClusterConfig
from artifex_agent.errors import ConfigError
from artifex_agent.render import build_plan, render_cluster, render_to
from artifex_agent.render.ethtool import device_unit
from artifex_agent.render.sysctl import SEED_SYSCTLS
from tests.render.conftest import EXAMPLE, assert_samba_accepts, body


def test_example_cluster_matches_the_seed(example: ClusterConfig) -> None:
    pc1, pc2 = example.agent("pc1"), example.agent("pc2")
    assert (pc1.platform, pc1.listen, pc1.interface) == ("linux", "10.0.0.1:50051", "enp3s0f0")
    assert (pc2.platform, pc2.listen, pc2.interface) == ("windows", "10.0.0.2:50051", "Ethernet 2")
    assert example.network.mtu == 9000 and example.network.subnet == "10.0.0.0/24"
    assert (example.shares.models, example.shares.projects, example.shares.cache) == \
        ("/data/models", "/data/projects", "/data/cache")
    assert (example.shares.projects_drive, example.shares.cache_drive) == ("P:", "Z:")
    assert example.security.token_file and example.coordinator.listen == "10.0.0.1:50050"
    plan = build_plan(example)
    assert [(h.name, h.ip, h.coordinator, h.shares_server) for h in plan.hosts] == \
        [("pc1", "10.0.0.1", True, True), ("pc2", "10.0.0.2", False, False)]


def test_every_file_says_what_it_is_for_and_how_to_apply_it(rendered: dict[str, str]) -> None:
    for path, text in rendered.items():
        if path == "README.txt":
            continue
        lines = text.splitlines()
        start = 1 if lines[0].startswith("#!") else 0
        assert lines[start].startswith("# artifex-agent config render: "), path
        assert "# How to apply:" in lines[start:start + 4], path


def test_netplan_sets_the_link_address_and_jumbo_mtu(rendered: dict[str, str]) -> None:
    doc = yaml.safe_load(rendered["pc1/netplan/01-artifex-10gbe.yaml"])
    nic = doc["network"]["ethernets"]["enp3s0f0"]
    assert doc["network"]["renderer"] == "networkd"
    assert nic["addresses"] == ["10.0.0.1/24"] and nic["mtu"] == 9000
    # No gateway or DNS on a link that reaches only the other PC.
    assert "routes" not in nic and "gateway4" not in nic and "nameservers" not in nic


@pytest.mark.skipif(shutil.which("netplan") is None, reason="netplan is not installed (apt install netplan.io)")
def test_netplan_accepts_the_file(rendered: dict[str, str], tmp_path: Path) -> None:
    etc = tmp_path / "etc" / "netplan"
    etc.mkdir(parents=True)
    (etc / "01-artifex-10gbe.yaml").write_text(rendered["pc1/netplan/01-artifex-10gbe.yaml"])
    (etc / "01-artifex-10gbe.yaml").chmod(0o600)
    out = subprocess.run(["netplan", "generate", "--root-dir", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    network = (tmp_path / "run" / "systemd" / "network" / "10-netplan-enp3s0f0.network").read_text()
    assert "Address=10.0.0.1/24" in network and "MTUBytes=9000" in network


def test_sysctl_carries_every_seed_value(rendered: dict[str, str]) -> None:
    lines = body(rendered["pc1/sysctl/90-artifex-10gbe.conf"])
    assert lines == [f"{k} = {v}" for k, v in SEED_SYSCTLS.items()]
    assert "net.core.rmem_max = 134217728" in lines and "net.ipv4.tcp_congestion_control = bbr" in lines
    assert body(rendered["pc1/sysctl/artifex-bbr.conf"]) == ["tcp_bbr"]


def test_ethtool_script_applies_the_seed_tuning_and_is_valid_bash(rendered: dict[str, str], tmp_path: Path) -> None:
    script = rendered["pc1/ethtool/artifex-network-tune.sh"]
    for line in ('step ip link set "$IFACE" mtu 9000', 'step ethtool -G "$IFACE" rx 4096 tx 4096',
                 'step ethtool -K "$IFACE" tso on gso on gro on lro on',
                 'step ethtool -C "$IFACE" adaptive-rx on adaptive-tx on', 'step ethtool -L "$IFACE" combined 8'):
        assert line in body(script)
    assert 'IFACE="${1:-enp3s0f0}"' in script
    path = tmp_path / "tune.sh"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    unit = rendered["pc1/ethtool/artifex-network-tune.service"]
    assert "WantedBy=sys-subsystem-net-devices-enp3s0f0.device" in unit


@pytest.mark.parametrize("name", ["enp3s0f0", "br-lan", "eth0.100", "wl_x:1"])
def test_device_unit_names_match_systemd_escape(name: str) -> None:
    if shutil.which("systemd-escape") is None:
        pytest.skip("systemd-escape is not installed")
    want = subprocess.run(["systemd-escape", "--path", "--suffix=device", f"/sys/subsystem/net/devices/{name}"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert device_unit(name) == want


def test_nfs_exports_are_the_seed_lines(rendered: dict[str, str]) -> None:
    assert [" ".join(line.split()) for line in body(rendered["pc1/nfs/exports"])] == [
        "/exports/projects 10.0.0.0/24(rw,sync,no_subtree_check,no_root_squash,insecure)",
        "/exports/cache 10.0.0.0/24(rw,async,no_subtree_check,no_root_squash,insecure)",
        "/exports/models 10.0.0.0/24(ro,sync,no_subtree_check,insecure)",
    ]
    assert body(rendered["pc1/nfs/fstab-artifex-exports"]) == [
        "/data/projects /exports/projects none bind 0 0",
        "/data/cache /exports/cache none bind 0 0",
        "/data/models /exports/models none bind 0 0",
    ]
    ports = rendered["pc1/nfs/artifex-ports.conf"]
    assert "[mountd]\nport=20048" in ports and "[statd]\nport=32765" in ports


def test_smb_share_blocks(rendered: dict[str, str], tmp_path: Path) -> None:
    conf = configparser.ConfigParser(comment_prefixes=("#", ";"))
    conf.read_string(rendered["pc1/samba/smb-artifex.conf"])
    assert conf.sections() == ["projects", "cache", "models"]
    assert dict(conf["projects"]) == {"path": "/data/projects", "read only": "no", "browsable": "yes",
                                      "hosts allow": "10.0.0.0/255.255.255.0 127.0.0.1"}
    assert conf["cache"]["path"] == "/data/cache" and conf["cache"]["read only"] == "no"
    assert conf["models"]["read only"] == "yes"
    assert_samba_accepts(rendered["pc1/samba/smb-artifex.conf"], tmp_path)


def test_ufw_allows_the_link_subnet_to_the_agent_coordinator_and_nfs(rendered: dict[str, str],
                                                                     tmp_path: Path) -> None:
    script = rendered["pc1/ufw/artifex-ufw.sh"]
    rules = [line for line in body(script) if line.startswith("ufw allow")]
    prefix = "ufw allow in on enp3s0f0 from 10.0.0.0/24 to any port"
    for port in ("50051 proto tcp", "50050 proto tcp", "9101 proto tcp", "9102 proto tcp", "2049 ", "111 ",
                 "20048 ", "32765 ", "32768 "):
        assert any(rule.startswith(f"{prefix} {port}") for rule in rules), port
    assert all(rule.startswith(prefix) for rule in rules)
    assert not any(" 445 " in rule for rule in rules)
    path = tmp_path / "ufw.sh"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0


def test_smb_protocol_opens_445_instead_of_nfs(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace('protocol = "nfs"', 'protocol = "smb"')
    (tmp_path / "c.toml").write_text(text)
    files = {f.path: f.content for f in render_cluster(ClusterConfig.load(tmp_path / "c.toml"))}
    rules = files["pc1/ufw/artifex-ufw.sh"]
    assert "to any port 445 proto tcp" in rules and "port 2049" not in rules
    assert "pc2/powershell/nfs-client.ps1" not in files
    mounts = files["pc2/powershell/mount-shares.ps1"]
    assert "New-SmbMapping" in mounts and r"'\\10.0.0.1\projects'" in mounts


def test_render_writes_files_with_their_modes(example: ClusterConfig, tmp_path: Path) -> None:
    written = render_to(example, tmp_path)
    assert (tmp_path / "README.txt") in written
    assert (tmp_path / "pc1/netplan/01-artifex-10gbe.yaml").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "pc1/ethtool/artifex-network-tune.sh").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "pc2/powershell/network.ps1").read_bytes().count(b"\r\n") > 10
    index = (tmp_path / "README.txt").read_text()
    assert "pc1/  linux, 10.0.0.1/24" in index and "/etc/exports" in index


@pytest.mark.parametrize("change, words", [
    (('listen = "10.0.0.2:50051"', 'listen = "0.0.0.0:50051"'), "IPv4 link address"),
    (('listen = "10.0.0.2:50051"', 'listen = "192.168.1.5:50051"'), "outside [network] subnet"),
    (('server = "pc1"', 'server = "pc2"'), "must be a linux PC"),
    (('server = "pc1"', 'server = "nobody"'), "not an agent name"),
])
def test_unrenderable_configs_say_why(tmp_path: Path, change: tuple[str, str], words: str) -> None:
    (tmp_path / "c.toml").write_text(EXAMPLE.read_text().replace(*change))
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        render_cluster(ClusterConfig.load(tmp_path / "c.toml"))

"""What `config render` knows about each PC: its link address, NIC, OS and the ports it serves."""

from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from artifex_agent.config import AgentConfig, ClusterConfig, split_hostport
from artifex_agent.config_problems import network_problems
from artifex_agent.errors import ConfigError

# Fixed ports for the NFSv3 side services (Windows' NFS client speaks v3 only, which needs
# portmap, mountd, statd and lockd besides 2049); pinned so a firewall can name them.
NFS_PORTS = {"portmap": 111, "nfs": 2049, "mountd": 20048, "statd": 32765, "statd-out": 32766, "lockd": 32768}
SMB_PORT = 445
IPERF3_PORT = 5201
WILDCARD_HOSTS = ("", "0.0.0.0", "::", "*")


@dataclass(frozen=True)
class Port:
    """One port this PC accepts from the link subnet."""

    number: int
    proto: str  # "tcp", "udp" or "tcp/udp"
    purpose: str


@dataclass
class Host:
    """One PC on the link: the agents it runs and what it serves."""

    name: str
    platform: str
    interface: str
    address: ipaddress.IPv4Interface
    agents: list[AgentConfig] = field(default_factory=list)
    coordinator: bool = False
    shares_server: bool = False
    # Its link MTU: [network] mtu unless one of its agents says otherwise.
    mtu: int = 9000

    @property
    def ip(self) -> str:
        return str(self.address.ip)


@dataclass(frozen=True)
class RenderedFile:
    """A file written under the output folder, and where it belongs on its PC."""

    path: str  # relative to the output folder, e.g. "pc1/sysctl/90-artifex-10gbe.conf"
    content: str
    target: str  # where it goes, e.g. "/etc/sysctl.d/90-artifex-10gbe.conf"
    purpose: str
    mode: int = 0o644


@dataclass
class Plan:
    """The cluster file resolved into hosts."""

    cluster: ClusterConfig
    hosts: list[Host]
    # The coordinator's link address when it runs on a PC of the subnet without an agent ("" otherwise).
    coordinator_only: str = ""

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.cluster.network.subnet, strict=False)

    @property
    def source(self) -> str:
        return str(self.cluster.source) if self.cluster.source else "(built-in defaults)"

    @property
    def shares_host(self) -> Host | None:
        return next((h for h in self.hosts if h.shares_server), None)

    @property
    def switch(self) -> bool:
        """Every PC on its own switch port, rather than two on one cable."""
        return self.cluster.network.topology == "switch"

    def peers(self, host: Host) -> list[Host]:
        """The other PCs of the cluster, in cluster-file order."""
        return [h for h in self.hosts if h is not host]

    def sources(self, host: Host) -> list[str]:
        """Who may reach `host`'s ports: the link subnet on a cable (only the other PC is on it); on a switch,
        which may carry other devices, each member PC by its address."""
        members = [h.ip for h in self.peers(host)] + ([self.coordinator_only] if self.coordinator_only else [])
        return members if self.switch and members else [str(self.subnet)]

    def ports(self, host: Host) -> list[Port]:
        """Every port `host` must accept from the link subnet."""
        ports = [Port(split_hostport(a.listen)[1], "tcp", f"agent {a.name}") for a in host.agents]
        ports += [Port(a.metrics_port, "tcp", f"metrics of agent {a.name}") for a in host.agents if a.metrics_port]
        coord = self.cluster.coordinator
        if host.coordinator:
            ports.append(Port(split_hostport(coord.listen)[1], "tcp", "coordinator"))
            if coord.metrics_port:
                ports.append(Port(coord.metrics_port, "tcp", "metrics of the coordinator"))
        ports.append(Port(IPERF3_PORT, "tcp", "iperf3 link test"))
        if host.shares_server:
            if self.cluster.shares.protocol == "nfs":
                ports += [
                    Port(NFS_PORTS["nfs"], "tcp/udp", "NFS"),
                    Port(NFS_PORTS["portmap"], "tcp/udp", "rpcbind (NFSv3 clients such as Windows)"),
                    Port(NFS_PORTS["mountd"], "tcp/udp", "NFS mountd (pinned in nfs.conf)"),
                    Port(NFS_PORTS["statd"], "tcp/udp", "NFS statd (pinned in nfs.conf)"),
                    Port(NFS_PORTS["lockd"], "tcp/udp", "NFS lockd (pinned in modprobe.d)"),
                ]
            else:
                ports.append(Port(SMB_PORT, "tcp", "SMB"))
        return ports


def link_host(address: str) -> str:
    """The host part of a host:port address."""
    return split_hostport(address)[0]


def agent_ip(agent: AgentConfig) -> str:
    """The agent's address on the link: its listen host, or `address` when it listens on all."""
    host = link_host(agent.listen)
    if host in WILDCARD_HOSTS:
        host = link_host(agent.dial_address)
    return host


def build_plan(cluster: ClusterConfig) -> Plan:
    """Group agents by link address into PCs; refuse what cannot be rendered, saying why."""
    net = cluster.network
    # A value the NIC or Windows would refuse is never written into netplan or PowerShell.
    bad = network_problems(net)
    if bad:
        raise ConfigError("; ".join(bad))
    try:
        subnet = ipaddress.IPv4Network(net.subnet, strict=False)
    except ValueError as exc:
        raise ConfigError(f"[network] subnet {net.subnet!r} is not an IPv4 network: {exc}") from None
    hosts: dict[str, Host] = {}
    for agent in cluster.agents:
        ip = agent_ip(agent)
        if ip in WILDCARD_HOSTS:
            raise ConfigError(f"agents.{agent.name}: listens on all addresses; render needs an IPv4 link address: "
                              f"set address = \"10.0.0.N:{split_hostport(agent.listen)[1]}\"")
        try:
            addr = ipaddress.IPv4Address(ip)
        except ValueError:
            raise ConfigError(f"agents.{agent.name}: render needs an IPv4 link address in listen or address, "
                              f"not {ip!r} (e.g. listen = \"10.0.0.1:50051\")") from None
        if addr not in subnet:
            raise ConfigError(f"agents.{agent.name}: {addr} is outside [network] subnet {subnet}")
        host = hosts.get(ip)
        if host is None:
            interface = agent.interface or net.interface
            if not interface:
                interface = "Ethernet 2" if agent.platform == "windows" else "enp3s0f0"
            host = hosts[ip] = Host(agent.name, agent.platform, interface,
                                    ipaddress.IPv4Interface(f"{ip}/{subnet.prefixlen}"), mtu=agent.mtu or net.mtu)
        elif host.platform != agent.platform:
            raise ConfigError(f"agents.{agent.name} and agents.{host.name} share {ip} but not the platform")
        host.agents.append(agent)
    coord_ip = link_host(cluster.coordinator.listen)
    if coord_ip in WILDCARD_HOSTS:
        coord_ip = link_host(cluster.coordinator.dial_address)
    for host in hosts.values():
        host.coordinator = host.ip == coord_ip
    server = cluster.shares.server
    if server:
        owner = next((h for h in hosts.values() if any(a.name == server for a in h.agents)), None)
        if owner is None:
            raise ConfigError(f"[shares] server {server!r} is not an agent name")
    else:
        owner = next((h for h in hosts.values() if h.platform == "linux"), None)
    if owner is not None:
        if owner.platform != "linux":
            raise ConfigError(f"[shares] server {owner.name!r} must be a linux PC (it exports NFS/SMB)")
        owner.shares_server = True
    # A coordinator on a PC of its own dials every agent: on a switch it is a member like the agents' PCs.
    coordinator_only = ""
    with contextlib.suppress(ValueError):
        if coord_ip not in hosts and ipaddress.IPv4Address(coord_ip) in subnet:
            coordinator_only = coord_ip
    return Plan(cluster, list(hosts.values()), coordinator_only)


def header(plan: Plan, comment: str, purpose: str, apply: list[str]) -> str:
    """The opening comment every rendered file carries: what it is for and how to apply it."""
    lines = [f"artifex-agent config render: {purpose}", f"Generated from {plan.source}; "
             "edit the cluster file and render again rather than this file.", "How to apply:"]
    lines += [f"  {step}" for step in apply]
    return "".join(f"{comment} {line}".rstrip() + "\n" for line in lines)


def write(files: list[RenderedFile], out: Path) -> list[Path]:
    """Write the files under `out` with their modes; returns the paths written."""
    written = []
    for f in files:
        path = out / f.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f.content, encoding="utf-8", newline="\r\n" if f.path.endswith(".ps1") else "\n")
        path.chmod(f.mode)
        written.append(path)
    return written

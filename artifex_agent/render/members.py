"""What `config check` says about the PCs of one link together: addresses given twice, MTUs that differ."""

from __future__ import annotations

import ipaddress
from collections import defaultdict

from artifex_agent.config import AgentConfig, ClusterConfig, is_loopback
from artifex_agent.render.plan import WILDCARD_HOSTS, agent_ip


def member_problems(cluster: ClusterConfig) -> list[str]:
    """Duplicate addresses and MTU mismatches between the cluster's PCs, each with what to do."""
    found = _duplicate_dials(cluster.agents)
    members = [a for a in cluster.agents if not is_loopback(a.dial_address) and agent_ip(a) not in WILDCARD_HOSTS]
    found += _shared_ips(members) + _reserved_ips(cluster, members) + _mtu_mismatch(cluster, members)
    pcs = {agent_ip(a) for a in members}
    if cluster.network.topology == "direct" and len(pcs) > 2:
        found.append(f'[network] topology = "direct" joins two PCs with one cable, but the agents are on '
                     f'{len(pcs)} ({", ".join(sorted(pcs))}): set topology = "switch"')
    return found


def _duplicate_dials(agents: list[AgentConfig]) -> list[str]:
    # Agents that listen on the same host:port are already named by the port check; this catches two
    # that listen apart (0.0.0.0 on two PCs) but are dialled at the same `address`.
    found = []
    seen: dict[str, AgentConfig] = {}
    for a in agents:
        first = seen.setdefault(a.dial_address, a)
        if first is not a and first.listen != a.listen:
            found.append(f"agents.{a.name} and agents.{first.name} are both reached at {a.dial_address}: "
                         "give each its own address (or port)")
    return found


def _shared_ips(members: list[AgentConfig]) -> list[str]:
    # Two agents on one IP are one PC with two GPUs, which then has one NIC; two NICs on one IP are two
    # PCs given the same address, and the switch would send each one's frames to whichever answered last.
    by_ip: dict[str, list[AgentConfig]] = defaultdict(list)
    for a in members:
        by_ip[agent_ip(a)].append(a)
    found = []
    for ip, agents in by_ip.items():
        nics = {a.interface for a in agents}
        if len(nics) > 1:
            named = ", ".join(f"agents.{a.name} ({a.interface or 'no interface'})" for a in agents)
            found.append(f"{ip} is given to {named}: agents on one address are one PC with one link NIC; "
                         "give every PC its own address on the subnet")
    return found


def _reserved_ips(cluster: ClusterConfig, members: list[AgentConfig]) -> list[str]:
    try:
        subnet = ipaddress.IPv4Network(cluster.network.subnet, strict=False)
    except ValueError:
        return []  # render names a subnet that is not one
    found = []
    for a in members:
        ip = agent_ip(a)
        if subnet.prefixlen < 31 and ip in (str(subnet.network_address), str(subnet.broadcast_address)):
            what = "network" if ip == str(subnet.network_address) else "broadcast"
            found.append(f"agents.{a.name}: {ip} is the {what} address of {subnet}, not a host's: "
                         f"use one of {subnet[1]}–{subnet[-2]}")
    return found


def _mtu_mismatch(cluster: ClusterConfig, members: list[AgentConfig]) -> list[str]:
    # A frame as big as the larger MTU is dropped on its way into the smaller NIC (path MTU discovery is
    # not used on a LAN): streams stall at their first full-size packet instead of failing cleanly.
    by_mtu: dict[int, list[str]] = defaultdict(list)
    for a in members:
        pc = f"{a.name} ({agent_ip(a)})"
        mtu = a.mtu or cluster.network.mtu
        if pc not in by_mtu[mtu]:
            by_mtu[mtu].append(pc)
    if len(by_mtu) < 2:
        return []
    groups = "; ".join(f"{mtu}: {', '.join(pcs)}" for mtu, pcs in sorted(by_mtu.items(), reverse=True))
    low = min(by_mtu)
    return [f"MTU differs between the PCs of the link ({groups}): every member (and the switch) needs one MTU; "
            f"set [network] mtu = {low} and drop the agents' own mtu, or raise the smaller NICs to "
            f"{max(by_mtu)}"]

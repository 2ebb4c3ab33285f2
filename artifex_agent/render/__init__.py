"""`config render`: the host files the seed writes by hand, from the one cluster file.

One module per target; each returns RenderedFile objects for the PCs it applies to.
"""

from __future__ import annotations

from pathlib import Path

from artifex_agent.config import ClusterConfig
from artifex_agent.render import ethtool, mounts, netplan, nfs, powershell, samba, sysctl, ufw
from artifex_agent.render.plan import Host, Plan, RenderedFile, build_plan, write

TARGETS = (netplan, sysctl, ethtool, nfs, samba, mounts, ufw, powershell)

__all__ = ["Host", "Plan", "RenderedFile", "build_plan", "render_cluster", "render_to", "write"]


def render_cluster(cluster: ClusterConfig) -> list[RenderedFile]:
    """Every file for every PC, plus an index saying which goes where."""
    plan = build_plan(cluster)
    files = [f for host in plan.hosts for target in TARGETS for f in target.render(plan, host)]
    return [*files, _index(plan, files)]


def render_to(cluster: ClusterConfig, out: Path) -> list[Path]:
    """Render and write under `out`."""
    return write(render_cluster(cluster), out)


def _index(plan: Plan, files: list[RenderedFile]) -> RenderedFile:
    lines = [f"Host files rendered by `artifex-agent config render` from {plan.source}.",
             "Each file starts with what it is for and how to apply it.", ""]
    for host in plan.hosts:
        roles = [f"agent{'s' if len(host.agents) > 1 else ''} {', '.join(a.name for a in host.agents)}"]
        if host.coordinator:
            roles.append("coordinator")
        if host.shares_server:
            roles.append(f"shares ({plan.cluster.shares.protocol})")
        lines.append(f"{host.name}/  {host.platform}, {host.address} on {host.interface!r}: {'; '.join(roles)}")
        for f in files:
            if f.path.startswith(host.name + "/"):
                lines.append(f"  {f.path.removeprefix(host.name + '/'):<42} -> {f.target}  ({f.purpose})")
        lines.append("")
    if plan.switch:
        lines += _switch(plan)
    return RenderedFile("README.txt", "\n".join(lines), "", "index")


def _switch(plan: Plan) -> list[str]:
    """What the switch itself needs: nothing renders its settings, so the index says them."""
    frame = max(h.mtu for h in plan.hosts) + 18  # Ethernet header and FCS on top of the IP MTU
    lines = [f"switch/  one port per PC, all untagged in one VLAN, {plan.subnet} for these PCs only; jumbo frames",
             f"  on for every member port (max frame size at least {frame} bytes; many switches take 9216):"]
    lines += [f"  {h.name:<12} {h.ip:<15} NIC {h.interface!r}, MTU {h.mtu}" for h in plan.hosts]
    return [*lines, ""]

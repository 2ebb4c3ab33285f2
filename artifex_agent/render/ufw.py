"""ufw rules: the link subnet (on a switch: each member PC) may reach the agent, coordinator, metrics and
share ports, nothing else."""

from __future__ import annotations

import shlex

from artifex_agent.render.plan import Host, Plan, RenderedFile, header

FILE = "artifex-ufw.sh"


def render(plan: Plan, host: Host) -> list[RenderedFile]:
    if host.platform != "linux":
        return []
    sources = plan.sources(host)
    who = f"the cluster's PCs ({', '.join(sources)})" if plan.switch else sources[0]
    iface = shlex.quote(host.interface)
    head = header(plan, "#", f"ufw rules letting {who} on {host.interface} reach this PC's artifex ports", [
        f"sudo bash {FILE}",
        "sudo ufw status verbose   # then `sudo ufw enable` if ufw is off (allow SSH first if you use it)",
    ])
    lines = ["#!/usr/bin/env bash", head.rstrip("\n"), "set -euo pipefail",
             'if [ "$(id -u)" != 0 ]; then echo "run as root (sudo bash $0)" >&2; exit 1; fi']
    for port in plan.ports(host):
        # `in on IFACE`: the rule holds for the link only, not for the LAN side.
        proto = "" if port.proto == "tcp/udp" else f" proto {port.proto}"
        lines += [f"ufw allow in on {iface} from {source} to any port {port.number}{proto} "
                  f"comment {shlex.quote('artifex: ' + port.purpose)}" for source in sources]
    lines.append("ufw status numbered | grep artifex || true")
    return [RenderedFile(f"{host.name}/ufw/{FILE}", "\n".join(lines) + "\n", "(run once)", "ufw rules", 0o755)]

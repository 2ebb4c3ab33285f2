"""ufw rules: the link subnet may reach the agent, coordinator, metrics and share ports, nothing else."""

from __future__ import annotations

import shlex

from artifex_agent.render.plan import Host, Plan, RenderedFile, header

FILE = "artifex-ufw.sh"


def render(plan: Plan, host: Host) -> list[RenderedFile]:
    if host.platform != "linux":
        return []
    subnet = str(plan.subnet)
    iface = shlex.quote(host.interface)
    head = header(plan, "#", f"ufw rules letting {subnet} on {host.interface} reach this PC's artifex ports", [
        f"sudo bash {FILE}",
        "sudo ufw status verbose   # then `sudo ufw enable` if ufw is off (allow SSH first if you use it)",
    ])
    lines = ["#!/usr/bin/env bash", head.rstrip("\n"), "set -euo pipefail",
             'if [ "$(id -u)" != 0 ]; then echo "run as root (sudo bash $0)" >&2; exit 1; fi']
    for port in plan.ports(host):
        # `in on IFACE`: the rule holds for the direct link only, not for the LAN side.
        proto = "" if port.proto == "tcp/udp" else f" proto {port.proto}"
        lines.append(f"ufw allow in on {iface} from {subnet} to any port {port.number}{proto} "
                     f"comment {shlex.quote('artifex: ' + port.purpose)}")
    lines.append("ufw status numbered | grep artifex || true")
    return [RenderedFile(f"{host.name}/ufw/{FILE}", "\n".join(lines) + "\n", "(run once)", "ufw rules", 0o755)]

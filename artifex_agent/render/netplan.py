"""Netplan for a Linux PC's link NIC: static address, MTU 9000, no gateway."""

from __future__ import annotations

from artifex_agent.render.plan import Host, Plan, RenderedFile, header

FILE = "01-artifex-10gbe.yaml"


def render(plan: Plan, host: Host) -> list[RenderedFile]:
    if host.platform != "linux":
        return []
    link = "its port on the switch" if plan.switch else "the direct link"
    head = header(plan, "#", f"static address {host.address} and MTU {host.mtu} on {host.interface} "
                  f"({link} of {host.name})", [
                      f"sudo install -m 600 {FILE} /etc/netplan/{FILE}   # netplan refuses world-readable files",
                      "sudo netplan try   # rolls back by itself unless confirmed within 120 s",
                      f"ip addr show {host.interface}   # expect {host.address} and mtu {host.mtu}",
                  ])
    if plan.switch:
        absent = "the switch"
        no_route = ("the switch joins only the\n"
                    "      # cluster's PCs, so DNS and the default route stay on the LAN interface.")
    else:
        absent = "the other PC"
        no_route = ("the direct link reaches only the\n"
                    "      # other PC, so DNS and the default route stay on the LAN interface.")
    body = f"""network:
  version: 2
  renderer: networkd
  ethernets:
    {_yaml_key(host.interface)}:
      dhcp4: false
      dhcp6: false
      addresses: [{host.address}]
      mtu: {host.mtu}
      # Keep the address while {absent} is off or the cable is out: the agent binds it
      # at start, and a missing address is a start-up failure that systemd does not retry.
      ignore-carrier: true
      # Boot does not wait for a link whose other end may be powered down.
      optional: true
      # No gateway or nameservers here (the seed set 8.8.8.8): {no_route}
"""
    return [RenderedFile(f"{host.name}/netplan/{FILE}", head + body, f"/etc/netplan/{FILE}",
                         "netplan: link address and MTU", 0o600)]


def _yaml_key(name: str) -> str:
    # Interface names are plain words on Linux; quote anything else rather than guess YAML's rules.
    return name if name.replace("-", "").replace("_", "").replace(".", "").isalnum() else f'"{name}"'

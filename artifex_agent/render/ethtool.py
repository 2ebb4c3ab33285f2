"""NIC tuning the seed's network_optimize.sh did by hand, as a script and a unit that reruns it at boot."""

from __future__ import annotations

import shlex

from artifex_agent.render.plan import Host, Plan, RenderedFile, header

SCRIPT = "artifex-network-tune.sh"
UNIT = "artifex-network-tune.service"
SCRIPT_TARGET = f"/usr/local/sbin/{SCRIPT}"


def device_unit(interface: str) -> str:
    """systemd's device unit for a network interface (what `systemd-escape --path` gives)."""
    path = f"sys/subsystem/net/devices/{interface}"
    out = []
    for i, ch in enumerate(path):
        if ch == "/":
            out.append("-")
        elif ch.isascii() and (ch.isalnum() or ch in ":_" or (ch == "." and i > 0)):
            out.append(ch)
        else:
            out.append("".join(f"\\x{b:02x}" for b in ch.encode()))
    return "".join(out) + ".device"


def render(plan: Plan, host: Host) -> list[RenderedFile]:
    if host.platform != "linux":
        return []
    net = plan.cluster.network
    iface = shlex.quote(host.interface)
    head = header(plan, "#", f"ring buffers, offloads, interrupt coalescing and queues for {host.interface}", [
        f"sudo install -m 755 {SCRIPT} {SCRIPT_TARGET}",
        f"sudo {SCRIPT_TARGET}   # once now; {UNIT} reruns it whenever the NIC appears",
        f"ethtool -g {iface}; ethtool -l {iface}   # check what the driver accepted",
    ])
    script = f"""#!/usr/bin/env bash
{head}
# Not `set -e`: a driver that rejects one setting (LRO, say) should not skip the others.
# The exit status is 1 when any step failed, so the boot unit shows up in `systemctl --failed`.
set -u
IFACE="${{1:-{host.interface}}}"
if [ "$(id -u)" != 0 ]; then echo "run as root (sudo $0)" >&2; exit 1; fi
failed=0
step() {{
  if ! "$@"; then echo "warning: '$*' failed (the NIC or its driver may not support it)" >&2; failed=1; fi
}}
step ip link set "$IFACE" mtu {host.mtu}
# Larger rings absorb bursts at 10 Gbit/s without drops (ethtool -S shows rx_missed_errors).
step ethtool -G "$IFACE" rx {net.ring_buffers} tx {net.ring_buffers}
# Segmentation and receive offloads move per-packet work to the NIC. LRO is safe here because
# this PC does not route or bridge the link; turn it off if it ever does.
step ethtool -K "$IFACE" tso on gso on gro on lro on
step ethtool -C "$IFACE" adaptive-rx on adaptive-tx on
# One queue per core up to {net.queues}, so receive work spreads over several cores.
step ethtool -L "$IFACE" combined {net.queues}
if [ "$failed" = 0 ]; then echo "network tuning of $IFACE complete"; fi
exit "$failed"
"""
    device = device_unit(host.interface)
    unit_head = header(plan, "#", f"rerun {SCRIPT} whenever {host.interface} appears (ethtool settings do not "
                       "survive a reboot)", [
                           f"sudo cp {UNIT} /etc/systemd/system/{UNIT}",
                           f"sudo systemctl daemon-reload && sudo systemctl enable --now {UNIT}",
                       ])
    unit = f"""{unit_head}
[Unit]
Description=artifex: 10GbE tuning of {host.interface} (rings, offloads, queues)
BindsTo={device}
After={device}

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={SCRIPT_TARGET} {host.interface}

[Install]
WantedBy={device}
"""
    return [
        RenderedFile(f"{host.name}/ethtool/{SCRIPT}", script, SCRIPT_TARGET, "ethtool tuning script", 0o755),
        RenderedFile(f"{host.name}/ethtool/{UNIT}", unit, f"/etc/systemd/system/{UNIT}", "boot unit for the script"),
    ]

"""Kernel network settings for 10GbE: the seed's socket buffers, backlog, BBR and MTU probing."""

from __future__ import annotations

from artifex_agent.render.plan import Host, Plan, RenderedFile, header

# The seed's values; `health` compares the running kernel against these.
SEED_SYSCTLS: dict[str, str] = {
    "net.core.rmem_max": "134217728",
    "net.core.wmem_max": "134217728",
    "net.ipv4.tcp_rmem": "4096 87380 134217728",
    "net.ipv4.tcp_wmem": "4096 65536 134217728",
    "net.core.netdev_max_backlog": "5000",
    "net.ipv4.tcp_congestion_control": "bbr",
    "net.ipv4.tcp_mtu_probing": "1",
}
FILE = "90-artifex-10gbe.conf"
BBR_FILE = "artifex-bbr.conf"


def render(plan: Plan, host: Host) -> list[RenderedFile]:
    if host.platform != "linux":
        return []
    head = header(plan, "#", "socket buffers (128 MiB), backlog, BBR and MTU probing for the 10GbE link", [
        f"sudo cp {FILE} /etc/sysctl.d/{FILE}   # a drop-in, rather than appending to /etc/sysctl.conf",
        f"sudo cp {BBR_FILE} /etc/modules-load.d/{BBR_FILE}",
        "sudo modprobe tcp_bbr && sudo sysctl --system",
        "sysctl net.ipv4.tcp_congestion_control   # expect bbr",
    ])
    body = "".join(f"{key} = {value}\n" for key, value in SEED_SYSCTLS.items())
    bbr_head = header(plan, "#", "load the BBR congestion control module at boot (sysctl needs it first)", [
        f"sudo cp {BBR_FILE} /etc/modules-load.d/{BBR_FILE}",
    ])
    return [
        RenderedFile(f"{host.name}/sysctl/{FILE}", head + body, f"/etc/sysctl.d/{FILE}", "sysctl: network tuning"),
        RenderedFile(f"{host.name}/sysctl/{BBR_FILE}", bbr_head + "tcp_bbr\n", f"/etc/modules-load.d/{BBR_FILE}",
                     "load tcp_bbr at boot"),
    ]

"""NFS exports of the shared folders (the seed's /exports tree), with ports a firewall can name."""

from __future__ import annotations

from artifex_agent.render.plan import NFS_PORTS, Host, Plan, RenderedFile, header

# (share, options): the seed's exports; `insecure` because Windows' NFS client may use a
# port above 1024, models read-only so no PC can damage them.
EXPORT_OPTIONS = {
    "projects": "rw,sync,no_subtree_check,no_root_squash,insecure",
    "cache": "rw,async,no_subtree_check,no_root_squash,insecure",
    "models": "ro,sync,no_subtree_check,insecure",
}


def export_paths(plan: Plan) -> dict[str, tuple[str, str]]:
    """share -> (data folder, export path)."""
    shares, root = plan.cluster.shares, plan.cluster.shares.export_root.rstrip("/")
    return {name: (getattr(shares, name), f"{root}/{name}") for name in EXPORT_OPTIONS}


def render(plan: Plan, host: Host) -> list[RenderedFile]:
    if not host.shares_server:
        return []
    paths = export_paths(plan)
    # On a switch each member PC by its address: the switch may carry other devices of the subnet.
    sources = plan.sources(host)
    width = max(len(export) for _, export in paths.values())
    exports_head = header(plan, "#", f"NFS exports of {', '.join(paths)} to {', '.join(sources)}", [
        "sudo apt install -y nfs-kernel-server",
        "mount the bind mounts first (fstab-artifex-exports), then merge these lines into /etc/exports:",
        "sudo exportfs -ra && sudo systemctl restart nfs-kernel-server",
        f"showmount -e {host.ip}   # lists the three exports",
    ])
    exports = "".join(f"{export:<{width}} {' '.join(f'{s}({EXPORT_OPTIONS[name]})' for s in sources)}\n"
                      for name, (_, export) in paths.items())
    dirs = " ".join(export for _, export in paths.values())
    data = " ".join(data for data, _ in paths.values())
    fstab_head = header(plan, "#", "bind mounts that put the data folders under the export root at every boot", [
        f"sudo mkdir -p {dirs} {data}",
        "append these lines to /etc/fstab, then: sudo mount -a",
    ])
    fstab = "".join(f"{data} {export} none bind 0 0\n" for data, export in paths.values())
    conf_head = header(plan, "#", "pin mountd and statd to fixed ports so ufw can allow them (NFSv3 clients, "
                       "such as Windows', need them)", [
                           "sudo mkdir -p /etc/nfs.conf.d && sudo cp artifex-ports.conf /etc/nfs.conf.d/",
                           "sudo systemctl restart nfs-kernel-server rpc-statd",
                       ])
    conf = (f"[mountd]\nport={NFS_PORTS['mountd']}\n\n"
            f"[statd]\nport={NFS_PORTS['statd']}\noutgoing-port={NFS_PORTS['statd-out']}\n")
    lockd_head = header(plan, "#", "pin the kernel lock manager (lockd) to a fixed port for the firewall", [
        "sudo cp artifex-lockd.conf /etc/modprobe.d/",
        "takes effect when lockd loads next (reboot, or restart NFS with no mounts active)",
    ])
    lockd = f"options lockd nlm_tcpport={NFS_PORTS['lockd']} nlm_udpport={NFS_PORTS['lockd']}\n"
    base = f"{host.name}/nfs"
    return [
        RenderedFile(f"{base}/exports", exports_head + exports, "/etc/exports", "NFS exports"),
        RenderedFile(f"{base}/fstab-artifex-exports", fstab_head + fstab, "/etc/fstab", "bind mounts for the exports"),
        RenderedFile(f"{base}/artifex-ports.conf", conf_head + conf, "/etc/nfs.conf.d/artifex-ports.conf",
                     "fixed mountd/statd ports"),
        RenderedFile(f"{base}/artifex-lockd.conf", lockd_head + lockd, "/etc/modprobe.d/artifex-lockd.conf",
                     "fixed lockd port"),
    ]

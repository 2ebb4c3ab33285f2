"""SMB share blocks, the seed's alternative to NFS (easier permissions from Windows)."""

from __future__ import annotations

from artifex_agent.render.plan import Host, Plan, RenderedFile, header

FILE = "smb-artifex.conf"


def render(plan: Plan, host: Host) -> list[RenderedFile]:
    if not host.shares_server:
        return []
    shares = plan.cluster.shares
    net = plan.subnet
    chosen = "the cluster file chooses SMB" if shares.protocol == "smb" else \
        "an alternative: the cluster file chooses NFS ([shares] protocol)"
    head = header(plan, "#", f"Samba share blocks for projects, cache and (read-only) models; {chosen}", [
        "sudo apt install -y samba",
        f"sudo tee -a /etc/samba/smb.conf < {FILE}   # once: appends the share blocks",
        "sudo smbpasswd -a $USER   # the account Windows connects with",
        "testparm -s && sudo systemctl restart smbd",
        f"Windows: \\\\{host.ip}\\projects in Explorer, or the rendered mount-shares.ps1",
    ])
    # `hosts allow` repeats the firewall: only the link subnet (on a switch: the member PCs), even if ufw is off.
    allow = " ".join(plan.sources(host)) if plan.switch else f"{net.network_address}/{net.netmask}"
    blocks = [
        ("projects", shares.projects, "no"),
        ("cache", shares.cache, "no"),
        # The seed's advice: a separate read-only share for the models.
        ("models", shares.models, "yes"),
    ]
    body = "".join(f"\n[{name}]\n   path = {path}\n   read only = {ro}\n   browsable = yes\n"
                   f"   hosts allow = {allow} 127.0.0.1\n" for name, path, ro in blocks)
    return [RenderedFile(f"{host.name}/samba/{FILE}", head + body, "/etc/samba/smb.conf", "SMB shares")]

"""fstab lines that mount the shares on a Linux PC that does not serve them (a third or fourth PC).

The shares mount at the paths they have on the serving PC, so one cluster file's paths hold on
every Linux PC.
"""

from __future__ import annotations

from artifex_agent.render.nfs import export_paths
from artifex_agent.render.plan import Host, Plan, RenderedFile, header

FILE = "fstab-artifex-shares"
SMB_CREDENTIALS = "/etc/artifex-smb.cred"
# hard: a share that drops out stalls the writer instead of losing frames; _netdev: mount after the network.
NFS_OPTIONS = "hard,noatime,_netdev,nofail"


def render(plan: Plan, host: Host) -> list[RenderedFile]:
    server = plan.shares_host
    if host.platform != "linux" or host.shares_server or server is None:
        return []
    shares = plan.cluster.shares
    if shares.protocol == "nfs":
        lines = [f"{server.ip}:{export} {data} nfs4 {'ro' if name == 'models' else 'rw'},{NFS_OPTIONS} 0 0"
                 for name, (data, export) in export_paths(plan).items()]
        install = "sudo apt install -y nfs-common"
    else:
        opts = f"credentials={SMB_CREDENTIALS},uid={shares.anon_uid},gid={shares.anon_gid},_netdev,nofail"
        lines = [f"//{server.ip}/{name} {getattr(shares, name)} cifs {opts + (',ro' if name == 'models' else '')} 0 0"
                 for name in ("projects", "cache", "models")]
        install = (f"sudo apt install -y cifs-utils; put username=... and password=... in {SMB_CREDENTIALS} "
                   "(mode 600)")
    dirs = " ".join(line.split()[1] for line in lines)
    head = header(plan, "#", f"mount the shares of {server.name} ({server.ip}, {shares.protocol.upper()}) at "
                  "the paths they have there", [
                      install,
                      f"sudo mkdir -p {dirs}",
                      "append these lines to /etc/fstab, then: sudo mount -a",
                      f"findmnt {dirs.split()[0]}   # expect {server.ip}",
                  ])
    return [RenderedFile(f"{host.name}/mounts/{FILE}", head + "".join(f"{line}\n" for line in lines), "/etc/fstab",
                         "share mounts")]

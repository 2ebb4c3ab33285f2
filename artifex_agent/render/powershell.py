"""PowerShell for a Windows PC: static IP, jumbo frames, NIC buffers, RSS, firewall, share mounts.

The scripts stay ASCII: Windows PowerShell 5.1 reads a file without a BOM in the ANSI code page.
"""

from __future__ import annotations

from artifex_agent.render.nfs import export_paths
from artifex_agent.render.plan import Host, Plan, RenderedFile, header

NETWORK = "network.ps1"
NFS_CLIENT = "nfs-client.ps1"
MOUNTS = "mount-shares.ps1"
FIREWALL_GROUP = "artifex-agent"
# NDIS standard keywords work whatever names the driver shows ("Jumbo Packet", "Receive Buffers").
JUMBO_KEYWORD = "*JumboPacket"
ETHERNET_HEADER = 14


def q(value: object) -> str:
    """A PowerShell single-quoted literal (no expansion; ' doubled)."""
    return "'" + str(value).replace("'", "''") + "'"


def render(plan: Plan, host: Host) -> list[RenderedFile]:
    if host.platform != "windows":
        return []
    files = [_network(plan, host)]
    shares_host = plan.shares_host
    if shares_host is not None:
        if plan.cluster.shares.protocol == "nfs":
            files.append(_nfs_client(plan, host))
        files.append(_mounts(plan, host, shares_host))
    return files


def _network(plan: Plan, host: Host) -> RenderedFile:
    net = plan.cluster.network
    peers = plan.peers(host)
    # A cable has one PC at the other end; on a switch every member gets the jumbo ping.
    pinged = [h.ip for h in peers] if plan.switch else [h.ip for h in peers[:1]]
    link = "its port on the switch" if plan.switch else "the direct link"
    head = header(plan, "#", f"static IP {host.address}, jumbo frames, NIC buffers, RSS and firewall rules "
                  f"on {host.interface!r} ({link} of {host.name})", [
                      f"in an elevated PowerShell: powershell -ExecutionPolicy Bypass -File .\\{NETWORK}",
                      f"pass -InterfaceAlias 'NAME' if the 10GbE port is not {host.interface!r} "
                      "(Get-NetAdapter lists them)",
                      "the NIC resets once while its advanced properties change",
                  ])
    rules = []
    for port in plan.ports(host):
        for proto in port.proto.split("/"):
            name = f"artifex: {port.purpose} ({proto.upper()} {port.number})"
            rules.append(f"New-NetFirewallRule @rule -DisplayName {q(name)} -Protocol {proto.upper()} "
                         f"-LocalPort {port.number} | Out-Null")
    rules.append("New-NetFirewallRule @rule -DisplayName 'artifex: ping from the link' -Protocol ICMPv4 "
                 "-IcmpType 8 | Out-Null")
    jumbo = host.mtu + ETHERNET_HEADER
    # 8972 = 9000 minus 20 (IP) and 8 (ICMP) bytes: the largest ping that must not fragment.
    ping = "".join(f"""
Write-Host "Jumbo ping to {peer} (must not fragment):"
ping.exe -n 2 -f -l {host.mtu - 28} {peer}
""" for peer in pinged)
    if plan.switch:
        # A switch may carry other devices of the subnet: the rules name each member PC.
        remote = f"$Members = @({', '.join(q(s) for s in plan.sources(host))})"
        remote_var, inbound = "$Members", "the member PCs"
        no_gateway = "the switch only joins the cluster's PCs."
    else:
        remote = f"$Subnet = {q(str(plan.subnet))}"
        remote_var, inbound = "$Subnet", "the link subnet"
        no_gateway = "the direct link only reaches the other PC."
    body = f"""#Requires -RunAsAdministrator
[CmdletBinding()]
param(
    [string]$InterfaceAlias = {q(host.interface)}
)
$ErrorActionPreference = 'Stop'
$Address = {q(host.ip)}
$PrefixLength = {host.address.network.prefixlen}
{remote}
$Group = {q(FIREWALL_GROUP)}
$nic = @{{ Name = $InterfaceAlias }}
$ip = @{{ InterfaceAlias = $InterfaceAlias; AddressFamily = 'IPv4' }}

$adapter = Get-NetAdapter @nic
Write-Host "Link: $($adapter.InterfaceDescription), $($adapter.LinkSpeed)"

# Static address without a gateway: {no_gateway}
Set-NetIPInterface @ip -Dhcp Disabled
if (-not (Get-NetIPAddress @ip -IPAddress $Address -ErrorAction SilentlyContinue)) {{
    New-NetIPAddress -InterfaceAlias $InterfaceAlias -IPAddress $Address -PrefixLength $PrefixLength | Out-Null
}}
# A link with no gateway is an "Unidentified network", which Windows files as Public.
Set-NetConnectionProfile -InterfaceAlias $InterfaceAlias -NetworkCategory Private

# Jumbo frames: "Jumbo Packet" = {jumbo} (MTU {host.mtu} plus the {ETHERNET_HEADER}-byte Ethernet header).
Set-NetAdapterAdvancedProperty @nic -RegistryKeyword {q(JUMBO_KEYWORD)} -RegistryValue {jumbo}
Set-NetIPInterface @ip -NlMtuBytes {host.mtu}
# Buffers: "Receive Buffers" / "Transmit Buffers" = {net.ring_buffers}.
Set-NetAdapterAdvancedProperty @nic -RegistryKeyword '*ReceiveBuffers' -RegistryValue {net.ring_buffers}
Set-NetAdapterAdvancedProperty @nic -RegistryKeyword '*TransmitBuffers' -RegistryValue {net.ring_buffers}
# RSS spreads receive work over {net.queues} queues (cores).
Set-NetAdapterRss @nic -Enabled $True -NumberOfReceiveQueues {net.queues}

# Inbound from {inbound} only; rerunning replaces the rules instead of adding copies.
Get-NetFirewallRule -Group $Group -ErrorAction SilentlyContinue | Remove-NetFirewallRule
$rule = @{{ Group = $Group; Direction = 'Inbound'; RemoteAddress = {remote_var}; Action = 'Allow'; Profile = 'Any' }}
{chr(10).join(rules)}

Get-NetAdapterAdvancedProperty @nic -RegistryKeyword {q(JUMBO_KEYWORD)}, '*ReceiveBuffers', '*TransmitBuffers' |
    Format-Table 'DisplayName', 'DisplayValue'
{ping}"""
    return RenderedFile(f"{host.name}/powershell/{NETWORK}", head + body, "(run once, elevated)",
                        "Windows link setup")


def _nfs_client(plan: Plan, host: Host) -> RenderedFile:
    shares = plan.cluster.shares
    head = header(plan, "#", "enable the Windows NFS client and make anonymous access write as the Linux "
                  f"owner of the shares (uid {shares.anon_uid}, gid {shares.anon_gid})", [
                      f"in an elevated PowerShell: powershell -ExecutionPolicy Bypass -File .\\{NFS_CLIENT}",
                      "the first run enables the feature and asks for a restart; run it again after it",
                      f"then, as yourself (not elevated): .\\{MOUNTS}",
                  ])
    body = f"""#Requires -RunAsAdministrator
$ErrorActionPreference = 'Stop'
# Feature names on Windows 10/11 (Windows Server calls it NFS-Client).
$features = 'ServicesForNFS-ClientOnly', 'ClientForNFS-Infrastructure'
$missing = @($features | Where-Object {{ (Get-WindowsOptionalFeature -Online -FeatureName $_).State -ne 'Enabled' }})
if ($missing.Count -gt 0) {{
    Enable-WindowsOptionalFeature -Online -FeatureName $missing -All -NoRestart | Out-Null
    Write-Warning 'NFS client enabled: restart Windows, then run this script again.'
    exit 0
}}
# Anonymous mounts write as uid/gid -2 unless told otherwise, and the Linux side then refuses
# writes to folders owned by its user; map them to that owner instead.
$key = 'HKLM:\\SOFTWARE\\Microsoft\\ClientForNFS\\CurrentVersion\\Default'
New-ItemProperty -Path $key -Name AnonymousUid -PropertyType DWord -Value {shares.anon_uid} -Force | Out-Null
New-ItemProperty -Path $key -Name AnonymousGid -PropertyType DWord -Value {shares.anon_gid} -Force | Out-Null
nfsadmin client stop
nfsadmin client start
Write-Host 'NFS client ready; now run {MOUNTS} as yourself (not elevated).'
"""
    return RenderedFile(f"{host.name}/powershell/{NFS_CLIENT}", head + body, "(run once, elevated)",
                        "Windows NFS client")


def _mounts(plan: Plan, host: Host, server: Host) -> RenderedFile:
    shares = plan.cluster.shares
    nfs = shares.protocol == "nfs"
    if nfs:
        paths = export_paths(plan)
        unc = {name: "\\\\" + server.ip + export.replace("/", "\\") for name, (_, export) in paths.items()}
    else:
        unc = {name: f"\\\\{server.ip}\\{name}" for name in ("projects", "cache")}
    drives = [(shares.projects_drive, unc["projects"]), (shares.cache_drive, unc["cache"])]
    table = "\n".join(f"    @{{ Drive = {q(d)}; Path = {q(p)} }}" for d, p in drives if d)
    head = header(plan, "#", f"map the shares as {', '.join(d for d, _ in drives if d)} "
                  f"({'NFS' if nfs else 'SMB'} from {server.ip})", [
                      f"as yourself, NOT elevated: powershell -ExecutionPolicy Bypass -File .\\{MOUNTS}",
                      "(drive letters belong to one logon: mapped elevated, Explorer does not see them; "
                      "a Windows service sees neither, so give services UNC paths)",
                      "NFS mounts do not persist: run it at logon (a shortcut in shell:startup)" if nfs else
                      "SMB mappings persist across logons",
                  ])
    if nfs:
        # In PowerShell `mount` is an alias of New-PSDrive; the NFS client is mount.exe. The
        # options are quoted: unquoted, PowerShell would pass anon and mtype=hard as two arguments.
        mount = ("& \"$env:SystemRoot\\System32\\mount.exe\" -o 'anon,mtype=hard' $m.Path $m.Drive\n"
                 "    if ($LASTEXITCODE -ne 0) { throw \"mount $($m.Drive) failed ($LASTEXITCODE)\" }")
    else:
        mount = "New-SmbMapping -LocalPath $m.Drive -RemotePath $m.Path -Persistent $True | Out-Null"
    body = f"""$ErrorActionPreference = 'Stop'
$mounts = @(
{table}
)
foreach ($m in $mounts) {{
    if (Test-Path -LiteralPath ($m.Drive + '\\')) {{
        Write-Host "$($m.Drive) is already mapped"
        continue
    }}
    {mount}
    Write-Host "$($m.Drive) -> $($m.Path)"
}}
"""
    return RenderedFile(f"{host.name}/powershell/{MOUNTS}", head + body, "(run at logon, not elevated)",
                        "Windows share mounts")

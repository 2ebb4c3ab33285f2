"""PC2's PowerShell: static IP, jumbo frames, buffers, RSS, firewall rules and the P:/Z: mounts."""

from __future__ import annotations

from tests.render.conftest import body


def test_network_script_sets_address_jumbo_buffers_and_rss(rendered: dict[str, str]) -> None:
    lines = body(rendered["pc2/powershell/network.ps1"])
    assert "[string]$InterfaceAlias = 'Ethernet 2'" in lines
    assert "$Address = '10.0.0.2'" in lines and "$PrefixLength = 24" in lines
    assert any(line.startswith("New-NetIPAddress -InterfaceAlias $InterfaceAlias -IPAddress $Address "
                               "-PrefixLength $PrefixLength") for line in lines)
    # "Jumbo Packet" 9014 = MTU 9000 + the Ethernet header, by its NDIS keyword.
    assert "Set-NetAdapterAdvancedProperty @nic -RegistryKeyword '*JumboPacket' -RegistryValue 9014" in lines
    assert "Set-NetAdapterAdvancedProperty @nic -RegistryKeyword '*ReceiveBuffers' -RegistryValue 4096" in lines
    assert "Set-NetAdapterAdvancedProperty @nic -RegistryKeyword '*TransmitBuffers' -RegistryValue 4096" in lines
    assert "Set-NetAdapterRss @nic -Enabled $True -NumberOfReceiveQueues 8" in lines
    assert "Set-NetIPInterface @ip -NlMtuBytes 9000" in lines
    assert "ping.exe -n 2 -f -l 8972 10.0.0.1" in lines


def test_firewall_admits_the_link_subnet_to_the_agent_port(rendered: dict[str, str]) -> None:
    lines = body(rendered["pc2/powershell/network.ps1"])
    assert "$Subnet = '10.0.0.0/24'" in lines
    assert any(line.startswith("$rule = @{") and "RemoteAddress = $Subnet" in line and "Direction = 'Inbound'" in line
               for line in lines)
    rules = [line for line in lines if line.startswith("New-NetFirewallRule @rule")]
    assert any("-Protocol TCP -LocalPort 50051" in rule for rule in rules)
    assert any("-Protocol TCP -LocalPort 9101" in rule for rule in rules)
    # PC2 runs neither the coordinator nor the shares.
    assert not any("50050" in rule or "2049" in rule for rule in rules)


def test_nfs_client_and_mounts_give_p_and_z(rendered: dict[str, str]) -> None:
    client = rendered["pc2/powershell/nfs-client.ps1"]
    assert "'ServicesForNFS-ClientOnly', 'ClientForNFS-Infrastructure'" in client
    assert "-Name AnonymousUid -PropertyType DWord -Value 1000" in client
    mounts = body(rendered["pc2/powershell/mount-shares.ps1"])
    assert r"@{ Drive = 'P:'; Path = '\\10.0.0.1\exports\projects' }" in mounts
    assert r"@{ Drive = 'Z:'; Path = '\\10.0.0.1\exports\cache' }" in mounts
    # mount.exe, not PowerShell's `mount` alias (New-PSDrive); options quoted as one argument.
    assert r"""& "$env:SystemRoot\System32\mount.exe" -o 'anon,mtype=hard' $m.Path $m.Drive""" in mounts


def test_powershell_files_are_ascii(rendered: dict[str, str]) -> None:
    # Windows PowerShell 5.1 reads BOM-less scripts in the ANSI code page.
    for path, text in rendered.items():
        if path.endswith(".ps1"):
            assert text.isascii(), path

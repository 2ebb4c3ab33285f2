# Install the artifex-agent Windows services (agent, and optionally the drop-folder watcher).
# Run in an elevated PowerShell from the repository (or wherever windows_service\ was copied):
#   powershell -ExecutionPolicy Bypass -File windows_service\install.ps1 `
#       -Python C:\artifex\.venv\Scripts\python.exe -Config P:\artifex\cluster.toml -Name pc2
# What it does: checks pywin32, writes the token file (readable by SYSTEM and Administrators
# only), registers the service(s) with delayed automatic start, sets their environment and
# restart-on-failure actions, and starts them. uninstall.ps1 undoes it.
#Requires -RunAsAdministrator
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)][string]$Python,
    # A service sees no mapped drives (P:, Z:): give a local or UNC path.
    [Parameter(Mandatory = $true)][string]$Config,
    [Parameter(Mandatory = $true)][string]$Name,
    [string]$Token = '',
    [string]$TokenFile = '',
    [switch]$Watcher,
    [switch]$NoStart
)
$ErrorActionPreference = 'Stop'
$Here = Split-Path -Parent $MyInvocation.MyCommand.Path
$ServiceScript = Join-Path $Here 'artifex_service.py'
$Home_ = Join-Path $env:ProgramData 'Artifex'

if (-not (Test-Path -LiteralPath $Python)) { throw "python not found: $Python" }
if ($Config -match '^[A-Za-z]:' -and -not (Test-Path -LiteralPath $Config)) {
    throw "config not found: $Config (mapped drives are invisible to services: use a local or UNC path)"
}
& $Python -c 'import win32serviceutil, artifex_agent' 2>$null
if ($LASTEXITCODE -ne 0) {
    throw "pywin32 or artifex-agent missing in $Python; run: & '$Python' -m pip install 'artifex-agent[windows]'"
}
# pywin32 installed by pip into a venv: the service host needs its DLLs next to it.
& $Python $ServiceScript prepare
if ($LASTEXITCODE -ne 0) { throw 'preparing the pywin32 service host failed' }

New-Item -ItemType Directory -Force -Path $Home_, (Join-Path $Home_ 'logs') | Out-Null
if ($TokenFile) { $Token = (Get-Content -LiteralPath $TokenFile -Raw).Trim() }
if ($Token) {
    $tokenPath = Join-Path $Home_ 'token'
    Set-Content -LiteralPath $tokenPath -Value $Token -NoNewline -Encoding ascii
    # Only SYSTEM and Administrators may read it.
    icacls $tokenPath /inheritance:r /grant:r 'SYSTEM:F' 'Administrators:F' | Out-Null
}

$services = @(@{ Kind = 'agent'; Service = 'ArtifexAgent' })
if ($Watcher) { $services += @{ Kind = 'watcher'; Service = 'ArtifexWatcher' } }
foreach ($s in $services) {
    & $Python $ServiceScript $s.Kind --startup delayed install
    if ($LASTEXITCODE -ne 0) { throw "installing $($s.Service) failed" }
    # The service's own environment (REG_MULTI_SZ 'Environment' under its key).
    $key = "HKLM:\SYSTEM\CurrentControlSet\Services\$($s.Service)"
    $envLines = @("ARTIFEX_CONFIG=$Config", "ARTIFEX_NAME=$Name", "ARTIFEX_HOME=$Home_", "ARTIFEX_PYTHON=$Python")
    New-ItemProperty -Path $key -Name Environment -PropertyType MultiString -Value $envLines -Force | Out-Null
    # Restart after 5 s, 5 s, then 30 s; the counter resets after a day without failures.
    sc.exe failure $s.Service reset= 86400 actions= restart/5000/restart/5000/restart/30000 | Out-Null
    sc.exe failureflag $s.Service 1 | Out-Null
    if (-not $NoStart) {
        Start-Service -Name $s.Service
        Write-Host "$($s.Service) started; log: $Home_\logs\$($s.Service).log"
    }
}
Get-Service -Name ($services | ForEach-Object { $_.Service }) | Format-Table 'Name', 'Status', 'StartType'

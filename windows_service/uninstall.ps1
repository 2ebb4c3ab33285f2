# Stop and remove the artifex-agent Windows services that install.ps1 registered.
#   powershell -ExecutionPolicy Bypass -File windows_service\uninstall.ps1 -Python C:\artifex\.venv\Scripts\python.exe
# Logs and the token under %ProgramData%\Artifex stay unless -Purge is given.
#Requires -RunAsAdministrator
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)][string]$Python,
    [switch]$Purge
)
$ErrorActionPreference = 'Stop'
$Here = Split-Path -Parent $MyInvocation.MyCommand.Path
$ServiceScript = Join-Path $Here 'artifex_service.py'

foreach ($s in @(@{ Kind = 'watcher'; Service = 'ArtifexWatcher' }, @{ Kind = 'agent'; Service = 'ArtifexAgent' })) {
    $svc = Get-Service -Name $s.Service -ErrorAction SilentlyContinue
    if (-not $svc) { continue }
    if ($svc.Status -ne 'Stopped') {
        # The service gives the agent its grace period (CTRL_BREAK, then kill after 45 s).
        Stop-Service -Name $s.Service
        $svc.WaitForStatus('Stopped', [TimeSpan]::FromSeconds(90))
    }
    & $Python $ServiceScript $s.Kind remove
    if ($LASTEXITCODE -ne 0) { sc.exe delete $s.Service | Out-Null }
    Write-Host "$($s.Service) removed"
}
if ($Purge) {
    Remove-Item -Recurse -Force -LiteralPath (Join-Path $env:ProgramData 'Artifex') -ErrorAction SilentlyContinue
}

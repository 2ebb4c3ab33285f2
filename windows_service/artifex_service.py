"""Windows services (pywin32) that run `artifex-agent serve` and `artifex-agent watch`.

The service runs the same entry point as a terminal would, as a child process, and stops it
the way the agent shuts down cleanly: CTRL_BREAK (Windows has no SIGTERM), NOT_SERVING,
streams get their grace period, then a kill only if it is still there after STOP_TIMEOUT_S.
A child that exits with 3 (configuration error) stops the service without the failure
actions, like systemd's RestartPreventExitStatus=3; any other failure lets them restart it.

Install and remove with install.ps1 / uninstall.ps1 beside this file; by hand:
    python artifex_service.py agent --startup delayed install
    python artifex_service.py agent remove
Settings come from the service's environment (install.ps1 writes it): ARTIFEX_CONFIG,
ARTIFEX_NAME, ARTIFEX_HOME (default %ProgramData%\\Artifex); the token from ARTIFEX_TOKEN or
the file %ProgramData%\\Artifex\\token.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from artifex_agent import daemon

STOP_TIMEOUT_S = 45.0
CONFIG_ERROR = 3


def artifex_home() -> Path:
    default = Path(os.environ.get("PROGRAMDATA", r"C:\ProgramData")) / "Artifex"
    return Path(os.environ.get("ARTIFEX_HOME") or default)


def python_exe() -> str:
    """python.exe of this environment: under the service host, sys.executable is pythonservice.exe."""
    if os.environ.get("ARTIFEX_PYTHON"):
        return os.environ["ARTIFEX_PYTHON"]
    if Path(sys.executable).stem.lower() == "python":
        return sys.executable
    prefix = Path(sys.prefix)
    for candidate in (prefix / "Scripts" / "python.exe", prefix / "python.exe", Path(sys.base_prefix) / "python.exe"):
        if candidate.exists():
            return str(candidate)
    return sys.executable


def child_env(home: Path) -> dict[str, str]:
    """What the child gets beside the service's environment: its home, and the token file's token."""
    env = {"ARTIFEX_HOME": str(home), "ARTIFEX_LOG_FORMAT": os.environ.get("ARTIFEX_LOG_FORMAT", "json")}
    token_file = home / "token"
    if not os.environ.get("ARTIFEX_TOKEN") and token_file.is_file():
        env["ARTIFEX_TOKEN"] = token_file.read_text(encoding="utf-8").strip()
    return env


class Supervisor:
    """One `artifex-agent COMMAND` child: start it, watch it, stop it cleanly."""

    def __init__(self, command: list[str], log: Path, env: dict[str, str] | None = None,
                 python: str | None = None) -> None:
        self.command = command
        self.log = log
        self.env = env or {}
        self.python = python
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        self.proc = daemon.spawn(self.command, self.log, self.env, python=self.python)
        return self.proc.pid

    def poll(self) -> int | None:
        """The child's exit code once it has exited, else None."""
        return None if self.proc is None else self.proc.poll()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> str:
        """CTRL_BREAK (SIGTERM elsewhere), then kill after `timeout`; returns what happened."""
        if self.proc is None or self.proc.poll() is not None:
            return "not running"
        import psutil

        outcome = daemon.stop(self.proc.pid, psutil.Process(self.proc.pid).create_time(), timeout)
        self.proc.wait()
        return outcome


try:  # pywin32 exists on Windows only; the Supervisor above is what the tests exercise elsewhere.
    import servicemanager
    import win32event
    import win32service
    import win32serviceutil
except ImportError:  # pragma: no cover - not Windows
    win32serviceutil = None


if win32serviceutil is not None:  # pragma: no cover - needs Windows

    class _ArtifexService(win32serviceutil.ServiceFramework):
        command: list[str] = []

        def __init__(self, args: list[str]) -> None:
            super().__init__(args)
            self.stop_event = win32event.CreateEvent(None, 0, 0, None)

        def SvcStop(self) -> None:
            self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING, waitHint=int((STOP_TIMEOUT_S + 15) * 1000))
            win32event.SetEvent(self.stop_event)

        SvcShutdown = SvcStop

        def SvcDoRun(self) -> None:
            home = artifex_home()
            log = home / "logs" / f"{self._svc_name_}.log"
            supervisor = Supervisor(self.command, log, child_env(home), python_exe())
            pid = supervisor.start()
            servicemanager.LogInfoMsg(f"{self._svc_name_}: started artifex-agent {' '.join(self.command)} "
                                      f"(pid {pid}), log {log}")
            while True:
                if win32event.WaitForSingleObject(self.stop_event, 1000) == win32event.WAIT_OBJECT_0:
                    outcome = supervisor.stop()
                    servicemanager.LogInfoMsg(f"{self._svc_name_}: child {outcome}")
                    return
                code = supervisor.poll()
                if code is None:
                    continue
                if code == CONFIG_ERROR:
                    # Returning normally: the failure actions (restart) do not run for a bad config.
                    servicemanager.LogErrorMsg(f"{self._svc_name_}: configuration error (exit 3), not restarting; "
                                               f"see {log}")
                    return
                if code == 0:
                    return
                # Raising stops the service with an error, so the failure actions restart it.
                raise RuntimeError(f"artifex-agent {' '.join(self.command)} exited with {code}; see {log}")

    class AgentService(_ArtifexService):
        _svc_name_ = "ArtifexAgent"
        _svc_display_name_ = "artifex-agent GPU agent"
        _svc_description_ = "Runs `artifex-agent serve` (Generate, PostProcess, Diagnostics, Health) on port 50051."
        command = ["serve"]

    class WatcherService(_ArtifexService):
        _svc_name_ = "ArtifexWatcher"
        _svc_display_name_ = "artifex-agent drop-folder watcher"
        _svc_description_ = "Runs `artifex-agent watch` on the shared cache's drop folder."
        command = ["watch"]

    SERVICES = {"agent": AgentService, "watcher": WatcherService}


def prepare_service_host() -> list[Path]:
    """Copy pywin32's DLLs next to pythonservice.exe, which a venv install leaves apart (pywin32 #1450)."""
    site = Path(sys.prefix) / "Lib" / "site-packages"
    copied = []
    for dll in (site / "pywin32_system32").glob("*.dll"):
        target = site / "win32" / dll.name
        if not target.exists():
            shutil.copy2(dll, target)
            copied.append(target)
    return copied


def main(argv: list[str]) -> int:
    if len(argv) > 1 and argv[1] == "prepare":
        for path in prepare_service_host():
            print(f"copied {path}")
        return 0
    if win32serviceutil is None:
        print("artifex_service.py needs Windows and pywin32 (pip install artifex-agent[windows])", file=sys.stderr)
        return 2
    if len(argv) < 2 or argv[1] not in SERVICES:  # pragma: no cover - needs Windows
        print(f"usage: {argv[0]} agent|watcher [pywin32 options] install|update|remove|start|stop|debug",
              file=sys.stderr)
        return 2
    win32serviceutil.HandleCommandLine(SERVICES[argv[1]], argv=[argv[0], *argv[2:]])  # pragma: no cover
    return 0  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main(sys.argv))

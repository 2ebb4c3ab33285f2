"""Detached `artifex-agent` processes with pid files: what `up` starts and `down` stops.

Also the graceful-stop primitive the Windows service uses: there is no SIGTERM on Windows,
so a process started in its own console group is sent CTRL_BREAK (agent, coordinator and
watcher handle SIGBREAK: lifecycle.stop_signals).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

CTRL_BREAK_EVENT = 1
ATTACH_PARENT_PROCESS = -1
# Windows: a console of its own (hidden) so CTRL_BREAK can reach it, and a group of its own so
# the break reaches nothing else.
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_NO_WINDOW = 0x08000000


@dataclass
class PidRecord:
    """What `up` wrote about one process it started."""

    kind: str  # "agent", "coordinator" or "watcher"
    name: str
    pid: int
    create_time: float
    args: list[str]
    log: str
    address: str = ""
    port_file: str = ""
    started: float = field(default_factory=time.time)

    @property
    def label(self) -> str:
        return self.kind if self.kind == self.name else f"{self.kind} {self.name}"

    def save(self, run_dir: Path) -> Path:
        run_dir.mkdir(parents=True, exist_ok=True)
        path = pid_path(run_dir, self.kind, self.name)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> PidRecord | None:
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None

    def alive(self) -> bool:
        """The recorded process still runs (and is the same one, not a reused pid)."""
        return process_alive(self.pid, self.create_time)


def pid_path(run_dir: Path, kind: str, name: str) -> Path:
    return run_dir / (f"{kind}.pid" if kind == name else f"{kind}-{name}.pid")


def records(run_dir: Path) -> list[tuple[Path, PidRecord | None]]:
    return [(p, PidRecord.load(p)) for p in sorted(run_dir.glob("*.pid"))]


def process_alive(pid: int, create_time: float) -> bool:
    try:
        proc = psutil.Process(pid)
        # A pid can be reused after a reboot or a long time; the start time tells them apart.
        return abs(proc.create_time() - create_time) < 1.0 and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None,
          python: str | None = None) -> subprocess.Popen[bytes]:
    """Start `python -m artifex_agent ARGS` detached from this terminal, output to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, object] = {}
    if sys.platform == "win32":
        kwargs["creationflags"] = CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW
    else:
        # A session of its own: closing the terminal (SIGHUP) or Ctrl+C there does not reach it.
        kwargs["start_new_session"] = True
    with open(log, "ab") as out:
        return subprocess.Popen([python or sys.executable, "-m", "artifex_agent", *args], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                **kwargs)  # type: ignore[call-overload]


def interrupt(pid: int) -> None:
    """Ask a process to stop the way it handles gracefully (SIGTERM; CTRL_BREAK on Windows)."""
    if sys.platform == "win32":
        send_ctrl_break(pid)
    else:
        os.kill(pid, signal.SIGTERM)


def send_ctrl_break(pid: int) -> None:
    """Windows: deliver CTRL_BREAK to the console of process group `pid` (see spawn)."""
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    # A process can be attached to one console at a time: leave ours, join the child's, and
    # ignore the break ourselves while it is sent.
    kernel32.FreeConsole()
    if not kernel32.AttachConsole(pid):
        raise OSError(ctypes.get_last_error(), f"cannot attach to the console of process {pid}")  # type: ignore
    try:
        kernel32.SetConsoleCtrlHandler(None, True)
        if not kernel32.GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, pid):
            raise OSError(ctypes.get_last_error(), f"CTRL_BREAK to process {pid} failed")  # type: ignore
        time.sleep(0.1)  # the event is delivered asynchronously; keep the console until it is
    finally:
        kernel32.FreeConsole()
        kernel32.SetConsoleCtrlHandler(None, False)
        # Back to the console we came from (a CLI's terminal); a service has none, which is fine.
        kernel32.AttachConsole(ATTACH_PARENT_PROCESS)


def stop(pid: int, create_time: float, timeout: float) -> str:
    """Stop gracefully, killing after `timeout` seconds; returns what happened."""
    if not process_alive(pid, create_time):
        return "not running"
    try:
        interrupt(pid)
    except (OSError, ProcessLookupError) as exc:
        logger.warning("could not signal %d (%s); killing it", pid, exc)
    try:
        proc = psutil.Process(pid)
        proc.wait(timeout)
        return "stopped"
    except psutil.NoSuchProcess:
        return "stopped"
    except psutil.TimeoutExpired:
        pass
    try:
        proc.kill()
        proc.wait(10)
    except psutil.NoSuchProcess:
        pass
    return f"killed after {timeout:.0f}s"

"""tests/processes.py: test agents stop together, a stuck one is killed, and none is signalled twice."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from artifex_agent.launcher import ChildProcess
from tests import processes

# Stops 1 s after the first SIGTERM with exit code 0; a second SIGTERM meanwhile makes it exit with 2.
GRACEFUL = """
import signal, sys, time
seen = []
def on_term(*_):
    seen.append(1)
    if len(seen) > 1:
        sys.exit(2)
    print("stopping", time.monotonic(), flush=True)
    time.sleep(1.0)
    print("exiting", time.monotonic(), flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
time.sleep(60)
"""
STUCK = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(60)
"""


def _child(tmp_path: Path, code: str) -> ChildProcess:
    child = ChildProcess([], tmp_path / "unused.log")
    child.proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)  # type: ignore[assignment]
    assert child.proc.stdout is not None and child.proc.stdout.readline().strip() == b"ready"
    return child


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_children_stop_in_parallel_and_one_ignoring_the_signal_is_killed(tmp_path: Path) -> None:
    graceful = [_child(tmp_path, GRACEFUL) for _ in range(3)]
    stuck = _child(tmp_path, STUCK)
    processes.stop_together([*graceful, stuck], timeout=1.5)
    # Together, not one by one: every graceful child had its SIGTERM before any of them finished
    # (CLOCK_MONOTONIC is one clock for all processes on Linux).
    marks = [dict(line.split() for line in c.proc.stdout.read().decode().splitlines())  # type: ignore[union-attr]
             for c in graceful]
    assert max(float(m["stopping"]) for m in marks) < min(float(m["exiting"]) for m in marks), marks
    assert [c.proc.returncode for c in graceful] == [0, 0, 0]  # type: ignore[union-attr]
    assert stuck.proc is not None and stuck.proc.returncode == -signal.SIGKILL


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_the_last_teardown_asks_every_held_process_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes, "_ending", False)  # put back after the test: this is not the session's end
    children = [_child(tmp_path, GRACEFUL) for _ in range(2)]
    with processes.held(lambda: children):
        processes.ask_all_to_stop()
        assert processes.session_ending()
        # Each has its stop under way (two signals sent before it handles the first would arrive as one).
        assert all(c.proc.stdout.readline().startswith(b"stopping") for c in children)  # type: ignore[union-attr]
    # The fixture's own stop waited for them without a second signal (that would exit with 2).
    assert [c.proc.returncode for c in children] == [0, 0]  # type: ignore[union-attr]

"""`artifex-agent top`: q quits it on a real (pseudo-)terminal; each job's stage and step are on screen."""

from __future__ import annotations

import io
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from artifex_agent.cli.top import AgentView, JobRow, Snapshot, render
from artifex_agent.coordinator.job import Job
from artifex_agent.jobspec import JobSpec

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")


def _read_until(fd: int, text: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while text not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
    return seen


def test_q_quits_top_and_gives_the_terminal_back(tmp_path: Path) -> None:
    import pty
    import termios

    config = tmp_path / "cluster.toml"
    # An agent nobody serves: top shows it unreachable, and still runs until asked to quit.
    config.write_text('[agents.pc1]\nlisten = "127.0.0.1:9"\n')
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "160", "LINES": "40"}
    proc = subprocess.Popen([sys.executable, "-m", "artifex_agent", "top", "--config", str(config),
                             "--interval", "0.3", "--state-dir", str(tmp_path / "state")],
                            stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    try:
        shown = _read_until(master, b"artifex-agent top", timeout=30)
        assert b"artifex-agent top" in shown, shown[-2000:]
        os.write(master, b"q")
        proc.wait(timeout=5)
        assert proc.returncode == 0, _read_until(master, b"\0", 0.5)[-2000:]
        assert termios.tcgetattr(slave)[3] & termios.ECHO  # echo is back on
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)


def test_the_screen_shows_each_jobs_stage_and_step_and_why_the_queue_waits() -> None:
    now = time.time()
    spec = JobSpec(prompts=["a red fox"])
    running = Job.submitted("a1b2c3d4e5f6", spec, now - 60)
    running.start("pc1", "pc2", "", now - 50)
    queued = Job.submitted("0f9e8d7c6b5a", spec, now - 5)
    queued.waiting, queued.expected_start = "waiting for a batch of 4 (1 queued)", now + 25.4
    snap = Snapshot([AgentView("pc1", "127.0.0.1:1", error="unreachable: connection refused")], None,
                    jobs=[JobRow(running, "denoise", 12, 40, "pc1"), JobRow(queued)])
    out = io.StringIO()
    Console(file=out, width=200).print(render(snap, None))
    text = out.getvalue()
    assert "a1b2c3d4e5f6" in text and "generating · denoise 12/40 (30%)" in text
    assert "0f9e8d7c6b5a" in text and "waiting for a batch of 4 (1 queued), starts in 25 s" in text

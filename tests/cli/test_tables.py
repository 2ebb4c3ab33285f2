"""Tables off a terminal keep every row whole; in a narrow terminal health wraps, but never inside a command."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import IO

import pytest

from artifex_agent.cli import jobs, processes
from artifex_agent.client import Job
from artifex_agent.health import render
from artifex_agent.health.checks import CheckResult, HealthReport
from artifex_agent.jobspec import JobSpec
from artifex_agent.terminal import wrap_keeping_commands

LONG = "/data/projects/renders/" + "/".join(f"season-{i:02d}" for i in range(12)) + "/a-red-fox-running.mp4"
COMMANDS = ["artifex-agent serve --name pc1", "sysctl -w net.core.rmem_max=134217728",
            "ufw allow from 10.0.0.0/24 to any port 50051 proto tcp"]


def report() -> HealthReport:
    return HealthReport([
        CheckResult("agent pc1", ok=False, value="cannot reach 10.0.0.1:50051: connection refused",
                    target="SERVING", fix=f"start it on its PC ({COMMANDS[0]}), check the link and the firewall"),
        CheckResult("net.core.rmem_max", ok=False, required=False, value="212992", target="≥ 134217728",
                    fix=f"{COMMANDS[1]} (persist: `config render`)"),
        CheckResult("port 50051", ok=False, value=f"closed; outputs go to {LONG}", target="open",
                    fix=f"open it ({COMMANDS[2]})")], 1.0)


@pytest.fixture
def narrow_terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[IO[str], int]]:
    """A real terminal (a pty) 60 columns wide, and the fd its output is read from."""
    monkeypatch.setenv("COLUMNS", "60")
    monkeypatch.delenv("TERM", raising=False)
    master, slave = os.openpty()
    with open(slave, "w", encoding="utf-8") as tty:
        yield tty, master
    os.close(master)


def read_all(tty: IO[str], master: int) -> str:
    tty.flush()
    os.set_blocking(master, False)
    chunks = []
    while True:
        try:
            chunks.append(os.read(master, 65536))
        except BlockingIOError:
            return b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")


def test_health_off_a_terminal_keeps_every_row_whole() -> None:
    out = io.StringIO()
    render.render(report(), file=out)
    lines = out.getvalue().splitlines()
    for command in [*COMMANDS, LONG]:
        assert any(command in line for line in lines), command
    assert len(lines) == 9, out.getvalue()  # title, rule, header, rule, a line per check, rule, summary


def test_health_in_a_narrow_terminal_never_splits_a_command(narrow_terminal: tuple[IO[str], int]) -> None:
    tty, master = narrow_terminal
    render.render(report(), file=tty)
    text = read_all(tty, master)
    assert "what to do" in text
    for command in COMMANDS:
        assert any(command in line for line in text.splitlines()), f"{command!r} split in:\n{text}"


def test_jobs_and_processes_off_a_terminal_keep_paths_whole(capsys: pytest.CaptureFixture[str]) -> None:
    job = Job(id="0123456789ab", state="done", spec=JobSpec(prompts=["a red fox running through deep snow"]),
              outputs=[LONG], agent="pc1", post_agent="pc2", created=1.0, started=2.0, finished=3.0)
    jobs.print_table([job])
    processes.print_table([{"process": "agent pc1", "pid": "4242", "address": "10.0.0.1:50051", "state": "ready",
                            "log": LONG.replace(".mp4", ".log")}])
    out = capsys.readouterr().out
    assert LONG in out and LONG.replace(".mp4", ".log") in out


def test_wrapping_keeps_commands_and_their_punctuation_whole() -> None:
    text = "start it on its PC (artifex-agent serve --name pc1), then run `artifex-agent health --quick`."
    assert wrap_keeping_commands(text, 20) == ["start it on its PC", "(artifex-agent serve --name pc1),",
                                               "then run", "`artifex-agent health --quick`."]

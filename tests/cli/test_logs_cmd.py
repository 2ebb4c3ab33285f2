"""`artifex-agent logs NAME`: the log `up` wrote for a process, by the name a user knows it by."""

from __future__ import annotations

from pathlib import Path

import pytest

from artifex_agent.cli.main import main
from artifex_agent.errors import ExitCode


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A state dir as `up` leaves it: logs/agent-NAME.log, logs/coordinator.log."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "agent-pc1.log").write_text("".join(f"pc1 line {i}\n" for i in range(100)), encoding="utf-8")
    (logs / "coordinator.log").write_text("coordinator listening\n", encoding="utf-8")
    return tmp_path


def test_an_agents_log_by_its_name(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["logs", "pc1", "--state-dir", str(state), "-n", "3"]) == ExitCode.OK
    assert capsys.readouterr().out == "pc1 line 97\npc1 line 98\npc1 line 99\n"
    assert main(["logs", "coordinator", "--state-dir", str(state)]) == ExitCode.OK
    assert capsys.readouterr().out == "coordinator listening\n"


def test_without_a_name_it_lists_the_logs(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["logs", "--state-dir", str(state)]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "pc1" in out and "coordinator" in out and str(state / "logs" / "agent-pc1.log") in out


def test_an_unknown_name_says_which_logs_there_are(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["logs", "pc9", "--state-dir", str(state)]) == ExitCode.FAILURE
    err = capsys.readouterr().err
    assert "no log for 'pc9'" in err and "pc1" in err and "coordinator" in err

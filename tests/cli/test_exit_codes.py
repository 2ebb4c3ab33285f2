"""Every exit code in the README's table, each produced for real; Ctrl+C and a closed pipe end cleanly."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from artifex_agent.cli.main import main
from artifex_agent.errors import ExitCode
from tests.cli.conftest import LoneCoordinator, interrupt

README = Path(__file__).parents[2] / "README.md"


def test_the_readme_table_lists_every_exit_code_and_only_those() -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Exit codes"):]
    section = section[:section.index("\n#", 1)]
    rows = dict(re.findall(r"^\| (\d+) \| `(\w+)` \|", section, re.MULTILINE))
    assert rows == {str(int(code)): code.name for code in ExitCode}


def test_ok_a_successful_cancel_exits_0(lone_coordinator: LoneCoordinator, capsys: pytest.CaptureFixture[str]) -> None:
    job_id = lone_coordinator.submit()
    assert main(["jobs", "cancel", job_id, "--config", str(lone_coordinator.config)]) == ExitCode.OK
    assert f"job {job_id}: cancelled" in capsys.readouterr().out
    # Cancelling it again: it is cancelled, as asked.
    assert main(["jobs", "cancel", job_id, "--config", str(lone_coordinator.config)]) == ExitCode.OK


def test_failure_a_job_that_does_not_exist(lone_coordinator: LoneCoordinator,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["jobs", "show", "nope", "--config", str(lone_coordinator.config)]) == ExitCode.FAILURE
    assert "no job" in capsys.readouterr().err


def test_usage_an_abbreviated_flag_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["submit", "a fox", "--frame", "17"])
    assert exited.value.code == ExitCode.USAGE
    assert "--frame 17" in capsys.readouterr().err


def test_startup_failure_a_missing_cluster_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["jobs", "--config", str(tmp_path / "nope.toml")]) == ExitCode.STARTUP_FAILURE
    assert "nope.toml" in capsys.readouterr().err


def test_unhealthy_an_agent_that_is_down(lone_coordinator: LoneCoordinator) -> None:
    assert main(["health", "--quick", "--json", "--connect-timeout", "0.5",
                 "--config", str(lone_coordinator.config)]) == ExitCode.UNHEALTHY


def test_interrupted_ctrl_c_in_submit_wait_says_how_to_watch_or_cancel(lone_coordinator: LoneCoordinator) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "artifex_agent", "submit", "a fox", "--wait", "--size", "16x16",
                             "--frames", "5", "--steps", "1", "--config", str(lone_coordinator.config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # "job ID submitted to ...": it is being watched now
        job_id = re.search(r"job (\w+) submitted", line)
        assert job_id, line
        time.sleep(0.3)
        interrupt(proc)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == ExitCode.INTERRUPTED, err
    assert "Traceback" not in err
    config = str(lone_coordinator.config)
    assert f"artifex-agent jobs watch {job_id[1]} --config {config}" in err
    assert f"artifex-agent jobs cancel {job_id[1]} --config {config}" in err
    lone_coordinator.cli("jobs", "cancel", job_id[1])


def test_a_closed_pipe_is_no_traceback(lone_coordinator: LoneCoordinator) -> None:
    """`jobs show ID | head -1`: the reader has gone before the output is written."""
    job_id = lone_coordinator.submit()
    read, write = os.pipe()
    os.close(read)  # as `head` does once it has its line
    try:
        done = subprocess.run([sys.executable, "-m", "artifex_agent", "jobs", "show", job_id,
                               "--config", str(lone_coordinator.config)], stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=60)
    finally:
        os.close(write)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.returncode == ExitCode.OK
    lone_coordinator.cli("jobs", "cancel", job_id)

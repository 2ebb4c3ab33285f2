"""`jobs show ID`: the job and what happened to it, oldest first (as text and in --json)."""

from __future__ import annotations

import json

import pytest

from artifex_agent.cli.main import main
from artifex_agent.errors import ExitCode
from tests.cli.conftest import LoneCoordinator


def test_jobs_show_has_the_event_history(lone_coordinator: LoneCoordinator,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    job_id = lone_coordinator.submit()
    lone_coordinator.cli("jobs", "cancel", job_id)
    capsys.readouterr()
    config = str(lone_coordinator.config)
    # Cancelled is not what `show` hopes for: exit 1, as for a failed job (README, "Exit codes").
    assert main(["jobs", "show", job_id, "--config", config]) == ExitCode.FAILURE
    out = capsys.readouterr().out
    history = out[out.index("  events:"):].splitlines()[1:]
    assert len(history) == 2 and "queued" in history[0] and "cancelled while queued" in history[1], out
    main(["jobs", "show", job_id, "--json", "--config", config])
    events = json.loads(capsys.readouterr().out)["events"]
    assert [e["state"] for e in events] == ["queued", "cancelled"]

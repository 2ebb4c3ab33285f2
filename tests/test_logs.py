"""Structured logs: JSON lines or text, each naming the job it belongs to."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from artifex_agent import logs
from artifex_agent.metrics import Metrics, parse_samples, total
from artifex_agent.services.activity import Activity


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    yield stream
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_json_lines_carry_the_job_id_of_the_stage_they_ran_in(captured: io.StringIO) -> None:
    logs.setup(logging.INFO, "json", captured)
    log = logging.getLogger("artifex_agent.test")
    activity = Activity()
    with activity.track("generate", "job-42"):
        log.info("denoising %d steps", 30, extra={"model": "wan2.2"})
    log.warning("outside")
    first, second = (json.loads(line) for line in captured.getvalue().splitlines())
    assert first["msg"] == "denoising 30 steps" and first["job_id"] == "job-42" and first["model"] == "wan2.2"
    assert first["level"] == "INFO" and first["logger"] == "artifex_agent.test" and first["ts"].endswith("+00:00")
    assert "job_id" not in second


def test_text_lines_tag_the_job_and_json_keeps_tracebacks(captured: io.StringIO) -> None:
    logs.setup(logging.INFO, "text", captured)
    with logs.job("j-7"):
        logging.getLogger("x").info("hello")
    assert "x [job j-7]: hello" in captured.getvalue()
    logs.setup(logging.INFO, "json", captured)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("x").exception("failed")
    entry = json.loads(captured.getvalue().splitlines()[-1])
    assert "ValueError: boom" in entry["exc"]


def test_activity_reports_stage_durations_and_outcomes() -> None:
    metrics = Metrics("agent", "t")
    activity = Activity(metrics=metrics)
    with activity.track("post", "a"):
        activity.count_frames("received", 3, 300)
    with pytest.raises(RuntimeError), activity.track("post", "b"):
        raise RuntimeError("encoder failed")
    from prometheus_client import generate_latest

    samples = parse_samples(generate_latest(metrics.registry).decode())
    assert total(samples, "artifex_stage_duration_seconds_count", stage="post", outcome="ok") == 1
    assert total(samples, "artifex_stage_duration_seconds_count", stage="post", outcome="error") == 1
    assert total(samples, "artifex_frames_total", direction="received") == 3
    assert total(samples, "artifex_stream_bytes_total", direction="received") == 300
    assert logs.job_id_var.get() == ""

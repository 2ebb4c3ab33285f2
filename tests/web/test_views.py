"""What the pages show of a job: its bar, ETA and the time each stage took."""

from __future__ import annotations

from artifex_agent.coordinator.job import Job
from artifex_agent.coordinator.messages import JobEvent
from artifex_agent.jobspec import JobSpec
from artifex_agent.web.views import ProgressBoard, fmt_seconds, job_view


def running_job() -> Job:
    job = Job.submitted("j1", JobSpec(prompts=["fox"]), 100.0)
    job.start("a", "b", "", 110.0, waited=10.0)
    return job


def progress(stage: str, step: int, total: int, at: float) -> JobEvent:
    return JobEvent("j1", "progress", "running", stage=stage, step=step, total=total, time=at)


def test_the_bar_and_eta_follow_the_current_stages_steps() -> None:
    board, job = ProgressBoard(), running_job()
    for step, at in ((1, 111.0), (2, 113.0), (3, 115.0)):
        board.note(progress("denoise", step, 10, at))
    view = job_view(job, board.jobs["j1"], now=115.0)
    assert view["percent"] == 30.0 and view["step"] == 3 and view["eta"] == fmt_seconds(4 / 3 * 7)
    assert view["elapsed"] == "5 s" and view["state"] == "running"
    board.note(progress("post", 1, 4, 120.0))  # a new stage: its own rate
    assert job_view(job, board.jobs["j1"], now=120.0)["percent"] == 25.0
    job.finish(["/out/j1.mp4"], ["0" * 64], 130.0)
    board.note(JobEvent("j1", "state", "done", stage="done", time=130.0, job=job))
    assert "j1" not in board.jobs and job_view(job)["percent"] == 100.0


def test_stage_times_come_from_the_agents_stages_or_else_the_stored_events() -> None:
    board, job = ProgressBoard(), running_job()
    board.note(progress("denoise", 1, 2, 111.0))
    board.note(progress("denoise", 2, 2, 150.0))
    board.note(progress("stream", 1, 9, 151.0))
    board.note(progress("post", 1, 9, 153.0))
    job.finish(["/out/j1.mp4"], ["0" * 64], 160.0)
    board.note(JobEvent("j1", "state", "done", stage="done", time=160.0))
    assert board.stage_times(job, []) == [("queued", "10 s"), ("denoise", "40 s"), ("stream", "2 s"),
                                          ("post", "7 s")]
    # A job that ran before this coordinator started: what its stored state changes say.
    history = [JobEvent("j1", "state", "queued", stage="queued", time=100.0),
               JobEvent("j1", "state", "running", stage="generating", time=110.0),
               JobEvent("j1", "state", "done", stage="done", time=160.0)]
    assert ProgressBoard().stage_times(job, history) == [("queued", "10 s"), ("generating", "50 s")]


def test_the_board_keeps_stage_times_for_a_bounded_number_of_jobs() -> None:
    board = ProgressBoard()
    for i in range(board.MAX_TIMED + 5):
        board.note(JobEvent(f"j{i}", "progress", "running", stage="denoise", step=1, total=2, time=float(i)))
    assert len(board.stages) == board.MAX_TIMED and "j0" not in board.stages

"""The job state machine: every legal move, and a clear refusal of every other one."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from artifex_agent.coordinator import messages
from artifex_agent.coordinator.job import MOVES, STATES, TERMINAL, TRANSITIONS, IllegalTransition, Job, JobState
from artifex_agent.jobspec import JobSpec

# Each move with the arguments it takes.
_DO: dict[str, Callable[[Job], None]] = {
    "start": lambda j: j.start("gen", "post", "b1", 10.0),
    "finish": lambda j: j.finish(["/out/a.mp4"], ["ab" * 32], 20.0),
    "finish_from_cache": lambda j: j.finish_from_cache(["/out/a.mp4"], ["ab" * 32], 20.0),
    "fail": lambda j: j.fail("boom", 20.0),
    "retry_later": lambda j: j.retry_later("agent down"),
    "requeue": lambda j: j.requeue(),
    "retry": lambda j: j.retry(),
    "cancel": lambda j: j.cancel(20.0),
}


def _job(state: JobState, **kw: object) -> Job:
    return Job("j1", state, JobSpec(prompts=["a fox"]), created=1.0, **kw)  # type: ignore[arg-type]


def test_states_are_defined_once_for_the_coordinator() -> None:
    assert STATES == ("queued", "running", "done", "failed", "cancelled")
    assert TERMINAL == {"done", "failed", "cancelled"}
    assert messages.TERMINAL is TERMINAL and messages.Job is Job
    assert set(_DO) == set(MOVES)


def test_the_transition_table_is_the_expected_one() -> None:
    assert TRANSITIONS == {
        ("queued", "running"), ("queued", "done"), ("queued", "cancelled"),
        ("running", "queued"), ("running", "done"), ("running", "failed"), ("running", "cancelled"),
        ("failed", "queued"), ("cancelled", "queued"),
    }
    assert not any(source == "done" for source, _ in TRANSITIONS)


@pytest.mark.parametrize(("move", "source"), [(m, s) for m, (sources, _) in MOVES.items() for s in sorted(sources)])
def test_every_legal_move_lands_in_its_state(move: str, source: JobState) -> None:
    job = _job(source, attempts=1)
    _DO[move](job)
    assert job.state == MOVES[move][1]
    assert (source, job.state) in TRANSITIONS


@pytest.mark.parametrize(("move", "source"),
                         [(m, s) for m, (sources, _) in MOVES.items() for s in STATES if s not in sources])
def test_every_illegal_move_raises_and_changes_nothing(move: str, source: JobState) -> None:
    job = _job(source, attempts=1, stage="x")
    before = job.copy()
    with pytest.raises(IllegalTransition, match=rf"job j1 is {source}: it cannot {move.replace('_', ' ')}"):
        _DO[move](job)
    assert job == before


def test_a_done_job_cannot_run_again() -> None:
    job = _job("done")
    with pytest.raises(IllegalTransition, match="job j1 is done: it cannot start"):
        job.start("gen", "post", "", 1.0)


def test_a_submitted_job_is_queued() -> None:
    job = Job.submitted("j2", JobSpec(prompts=["a"]), 5.0, "key")
    assert (job.state, job.stage, job.created, job.idempotency_key, job.attempts) == ("queued", "queued", 5.0, "key", 0)


def test_start_records_the_attempt_and_the_agents() -> None:
    job = _job("queued", finished=3.0)
    job.start("gen", "post", "b1", 10.0)
    assert (job.state, job.stage, job.started, job.finished, job.attempts) == ("running", "generating", 10.0, None, 1)
    assert (job.agent, job.post_agent, job.batch_id) == ("gen", "post", "b1")


def test_only_a_running_job_advances() -> None:
    job = _job("running")
    job.advance("streaming")
    assert job.stage == "streaming"
    for state in ("queued", "done", "failed", "cancelled"):
        with pytest.raises(IllegalTransition, match=f"job j1 is {state}: only a running job advances"):
            _job(state).advance("post")


def test_finishing_clears_the_error_and_records_outputs() -> None:
    job = _job("running", error="earlier attempt", started=5.0)
    job.finish(["/o.mp4"], ["aa"], 20.0)
    assert (job.stage, job.outputs, job.sha256, job.finished, job.error, job.cached) == (
        "done", ["/o.mp4"], ["aa"], 20.0, "", False)


def test_finishing_from_the_cache_keeps_an_earlier_start() -> None:
    fresh = _job("queued")
    fresh.finish_from_cache(["/o.mp4"], ["aa"], 20.0)
    assert (fresh.stage, fresh.cached, fresh.started, fresh.finished) == ("done", True, 20.0, 20.0)
    earlier = _job("queued", started=7.0)
    earlier.finish_from_cache(["/o.mp4"], ["aa"], 20.0)
    assert earlier.started == 7.0


def test_failing_retrying_later_and_requeueing() -> None:
    failed = _job("running", attempts=2)
    failed.fail("boom", 20.0)
    assert (failed.stage, failed.error, failed.finished, failed.attempts) == ("failed", "boom", 20.0, 2)
    waiting = _job("running", attempts=2)
    waiting.retry_later("agent down")
    assert (waiting.state, waiting.stage, waiting.error, waiting.attempts) == ("queued", "waiting", "agent down", 2)
    requeued = _job("running", attempts=2)
    requeued.requeue()
    assert (requeued.state, requeued.stage, requeued.attempts) == ("queued", "queued", 1)
    never_counted = _job("running", attempts=0)
    never_counted.requeue()
    assert never_counted.attempts == 0


def test_a_retry_starts_afresh() -> None:
    job = _job("failed", attempts=4, error="boom", started=5.0, finished=9.0)
    job.retry()
    assert (job.state, job.stage, job.attempts, job.error, job.started, job.finished) == (
        "queued", "queued", 0, "", None, None)


def test_cancelling_ends_the_job() -> None:
    for state in ("queued", "running"):
        job = _job(state)  # type: ignore[arg-type]
        job.cancel(20.0)
        assert (job.state, job.stage, job.finished, job.terminal) == ("cancelled", "cancelled", 20.0, True)

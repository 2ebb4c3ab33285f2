"""bench/scaling.py's --agents: the sizes it accepts and the figures it derives from each size's runs."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from bench.scaling import pair_report, parse_agents, sizes_report, stage_of


def _run(jpm: float, cpu_ms: float, generated_on: dict[str, int]) -> dict[str, Any]:
    return {"jobs_per_min": jpm, "wall_s": 60.0, "cpu_per_job_ms": cpu_ms, "agent_cpu_per_job_s": 2.0,
            "agent_busy": 0.9, "job_run_s": 2.0, "generated_on": generated_on, "posted_on_same_agent": 5}


def test_agents_are_sorted_unique_and_must_include_one() -> None:
    assert parse_agents("4,1,2,2") == [1, 2, 4]
    for bad in ("2,4", "1,x", "", "1,9"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_agents(bad)
    assert [stage_of(n) for n in "abcd"] == ["generate", "post", "generate", "post"]


def test_each_size_is_reported_against_one_agent_and_against_what_the_machine_allows() -> None:
    runs = {1: [_run(10, 20, {"a": 12}), _run(12, 22, {"a": 12})],
            2: [_run(20, 21, {"a": 6, "b": 6})] * 2,
            4: [_run(22, 19, {"a": 3, "b": 3, "c": 3, "d": 3})] * 2}
    report = sizes_report(runs, {1: 1.0, 2: 1.8, 4: 2.0})
    assert report["agents_1_jobs_per_min"] == 11  # the median of the rounds
    assert report["agents_4_ratio"] == pytest.approx(2.0)
    assert report["agents_4_direct_ratio_without_coordinator"] == 2.0
    assert report["agents_4_ratio_of_direct"] == pytest.approx(1.0)
    assert report["agents_2_ratio_of_direct"] == pytest.approx(20 / 11 / 1.8)
    assert [report[f"agents_{n}_coordinator_cpu_s_per_job"] for n in (1, 2, 4)] == pytest.approx([0.021, 0.021, 0.019])
    assert "agents_1_ratio" not in report and report["agents_4_generated_on"]["d"] == 3


def test_the_default_one_against_two_report_keeps_its_keys() -> None:
    runs = {1: [_run(10, 20, {"a": 12, "b": 0})], 2: [_run(18, 25, {"a": 6, "b": 6})]}
    report = pair_report(runs, {1: 1.0, 2: 1.7})
    assert list(report) == [
        "one_agent_jobs_per_min", "two_agents_jobs_per_min", "ratio", "coordinator_cpu_s_per_job_one",
        "coordinator_cpu_s_per_job_two", "ratios_per_round", "direct_ratio_without_coordinator", "agent_busy_one",
        "agent_busy_two", "agent_cpu_per_job_s_one", "agent_cpu_per_job_s_two", "two_agents_generated_on",
        "two_agents_posted_on_generating_agent"]
    assert report["ratio"] == pytest.approx(1.8) and report["direct_ratio_without_coordinator"] == 1.7

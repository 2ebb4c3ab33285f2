"""The coordinator's job metrics, and the Grafana dashboard in docs/ that graphs them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import grpc
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from artifex_agent.coordinator.retry import reason
from artifex_agent.errors import RequestError, StreamError
from artifex_agent.metrics import BusyClock, JobMetrics, Metrics
from artifex_agent.services.activity import Activity
from artifex_agent.transport.post_call import RemoteError

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json"
# What a family of each type exposes (prometheus text format).
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",), "info": ("_info",)}


def exported(metrics: Metrics) -> set[str]:
    """Every series name a scrape of this process can return, samples or not yet."""
    text = generate_latest(metrics.registry).decode()
    return {family.name + suffix for family in text_string_to_metric_families(text)
            for suffix in SUFFIXES.get(family.type, ("",))}


def queried() -> set[str]:
    """Every series the dashboard's panels ask Prometheus for."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    return {name for expr in exprs for name in re.findall(r"\bartifex_[a-z0-9_]+", expr)}


def test_every_series_the_dashboard_queries_is_exported() -> None:
    coordinator = Metrics("coordinator", "coordinator", jobs=JobMetrics())
    agent = Metrics("agent", "pc1", activity=Activity(), gpu=True)
    missing = queried() - exported(coordinator) - exported(agent)
    assert not missing, f"the dashboard queries series no process exports: {sorted(missing)}"
    # It graphs each of the coordinator's job series: stage times, queue wait, failures, retries, busy agents.
    jobs = {n for n in exported(coordinator) if n.startswith(("artifex_job_", "artifex_agent_busy"))}
    assert {"artifex_job_stage_duration_seconds_bucket", "artifex_job_queue_wait_seconds_bucket",
            "artifex_job_failures_total", "artifex_job_retries_total", "artifex_agent_busy_seconds_total",
            "artifex_job_duration_seconds_count"} <= jobs & queried()


def test_busy_time_grows_while_an_agent_works_and_stops_when_it_is_idle() -> None:
    clock = BusyClock()
    gen, post = ("pc1", "generate"), ("pc1", "post")
    clock.update({gen: True, post: False}, 10.0)
    assert clock.seconds(15.0) == {gen: 5.0, post: 0.0}  # a long generation shows while it runs
    clock.update({gen: True, post: True}, 20.0)
    clock.update({gen: False, post: True}, 30.0)
    assert clock.seconds(31.0) == {gen: 20.0, post: 11.0}
    clock.update({gen: False, post: False}, 40.0)
    assert clock.seconds(100.0) == {gen: 20.0, post: 20.0}


def test_failure_reasons_are_a_few_stable_labels_never_a_message() -> None:
    assert reason(RemoteError("pc2", grpc.StatusCode.UNAVAILABLE, "socket closed")) == "agent_unavailable"
    assert reason(RemoteError("pc1", grpc.StatusCode.RESOURCE_EXHAUSTED, "needs 30 GiB")) == "resource_exhausted"
    assert reason(StreamError("trailer checksum mismatch")) == "stream_broken"
    assert reason(RequestError("width must be a multiple of 16")) == "refused"
    assert reason(ZeroDivisionError()) == "coordinator_error"

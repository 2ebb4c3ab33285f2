"""bench/web.py at a tiny size: a real coordinator with its page, a live and an absent agent, two open pages."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.web import run


@pytest.mark.slow
def test_bench_web_measures_pages_events_and_scheduling(tmp_path: Path) -> None:
    probes = 3
    got = run(tmp_path, finished=20, queued=3, pages=2, probes=probes, rounds=1, every_s=0.0,
              loads_per_s=10.0)
    # The queue page was loaded while the probes ran, and answered (a non-2xx answer raises in the bench).
    assert got["queue_page_loads"] >= 1
    assert 0 < got["healthz_ttfb_p50_ms"] and 0 < got["queue_page_ttfb_p50_ms"] <= got["queue_page_ttfb_p99_ms"]
    assert got["queue_page_ttfb_p50_ms"] <= got["queue_page_whole_p50_ms"] <= got["queue_page_whole_p99_ms"]
    # Every page saw every probe's state changes (queued, running, done), the same number on each.
    low, high = got["state_events_per_page_min_max"]
    assert low == high >= 3 * probes
    assert got["events_per_page_min_max"][0] >= low and got["events_per_s_per_page"] > 0
    for key in ("submit_to_start_quiet_p99_ms", "submit_to_start_pages_p99_ms", "submit_to_start_p99_ratio"):
        assert math.isfinite(got[key]) and got[key] > 0, key

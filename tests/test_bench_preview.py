"""bench/preview.py at a tiny size: seconds per step with and without previews, on the real tiny pipeline."""

from __future__ import annotations

import math

import pytest

from bench.preview import run


@pytest.mark.slow
def test_bench_preview_times_steps_with_and_without_previews() -> None:
    got = run(repeats=1, steps=6, size="32x32", frames=5, device="cpu")
    for key in ("s_per_step_without", "s_per_step_with_previews", "ratio"):
        assert math.isfinite(got[key]) and got[key] > 0, key
    # At least the first due step's and the last step's came, each a real image.
    assert got["previews_per_job"] >= 2 and got["preview_bytes_mean"] > 100
    assert (got["size"], got["steps"], got["goal_ratio"]) == ("32x32x5", 6, 1.03)

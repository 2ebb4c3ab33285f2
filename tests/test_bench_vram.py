"""bench.vram and bench.gpu_check --tiny run end to end, so the GPU check does not rot between GPU runs.

Both run as the user runs them (a subprocess, JSON on stdout), on the tiny models and the CPU, in seconds.
The classification of refused and out-of-memory cases, which the CPU never produces, is checked on a fake engine.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from artifex_agent.errors import ResourceError

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _bench(*args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.slow
def test_vram_bench_reports_every_placement_and_offload_keeps_the_bits() -> None:
    out = _bench("bench.vram", "--json", "--steps", "2", "--size", "64x64", "--frames", "5")
    rows = {r["placement"]: r for r in out["placements"]}
    from bench.vram import CPU_PLACEMENTS, CUDA_PLACEMENTS

    assert list(rows) == list(CUDA_PLACEMENTS if out["device"] != "cpu" else CPU_PLACEMENTS)
    assert ("RSS" in out["memory_metric"]) == (out["device"] == "cpu")
    for label, row in rows.items():
        assert row["status"] == "ok", row
        assert len(row["step_s"]) == 2 and row["s_per_step"] > 0
        assert row["peak_bytes"] >= row["denoise_peak_bytes"] >= 0
        assert row["baseline"] == "none" and math.isfinite(row["s_per_step_vs_baseline"])
        if out["device"] == "cpu":
            assert row["tensor_peak_bytes"] >= row["denoise_tensor_peak_bytes"] > 0
        if "fp8" not in label:
            # Offload moves weights; it must not change a single bit of the frames.
            assert row["frames_equal_baseline"] and row["max_abs_diff"] == 0, label
        else:
            assert 0 <= row["max_abs_diff"] <= 32, label
    assert rows["none"]["s_per_step_vs_baseline"] == 1.0


@pytest.mark.slow
def test_gpu_check_tiny_runs_every_case_and_extrapolates() -> None:
    out = _bench("bench.gpu_check", "--tiny", "--json")
    assert out["tiny"] and out["device"] == "cpu" and out["cap_bytes"] is None
    assert out["job"]["experts_by_step"] == [["transformer"], ["transformer_2"]]
    assert out["job"]["passes"] == 2 and out["target_blocks"] == 40
    cases = out["cases"]
    ran = [c for c in cases if c["status"] == "ok"]
    # Three CPU policies x three formats, plus the group job run again with its VAE decode.
    assert len(ran) == 10, [c["status"] for c in cases]
    assert {(c["policy"], c["format"]) for c in ran} == {
        (p, f) for p in ("none", "model", "group") for f in ("bf16", "fp8", "gguf")}
    assert all(c["status"].startswith("n/a") for c in cases if c["policy"] == "sequential")
    decoded = [c for c in ran if c["output"] == "rgb"]
    assert [(c["policy"], c["format"]) for c in decoded] == [("group", "bf16")] and decoded[0]["after_steps_s"] > 0
    for c in ran:
        # The memory plan's estimate of the same job sits beside each measurement.
        assert "plan_error" not in c and c["plan_peak_bytes"] >= c["plan_denoise_bytes"] > 0, c
        assert c["blocks"] == 2 and c["block_s"] > 0 and c["block_bytes"] > 0
        assert c["weights_bytes_40"] == c["nonblock_bytes"] + 40 * c["block_bytes"]
        assert math.isclose(c["step_s_40"], 40 * c["block_s"] * 2)
        if c["policy"] != "none" and c["output"] == "latent":
            assert c["max_abs_diff_vs_none"] == 0, c
    by = {(c["placement"], c["format"], c["output"]): c for c in ran}
    # Storage per block: fp8 about half of bf16, Q8_0 a little over half (a scale per 32 values).
    bf16 = by[("none", "bf16", "latent")]["block_bytes"]
    assert by[("none+fp8", "fp8", "latent")]["block_bytes"] < 0.6 * bf16
    assert by[("none", "gguf", "latent")]["block_bytes"] < 0.6 * bf16


def test_gpu_check_reports_a_placement_the_plan_refuses_as_a_row(capsys: pytest.CaptureFixture[str]) -> None:
    # A plan budget far below any job: the real planner refuses before loading, and the check goes on.
    # In this process (the tests above run the script as a user does): nothing is loaded, so nothing leaks.
    from bench import gpu_check

    called = time.time()
    assert gpu_check.main(["--tiny", "--json", "--budget-gib", "0.001", "--policies", "none,group",
                           "--formats", "bf16", "--decode", "none"]) == 0
    took = time.time() - called
    out = json.loads(capsys.readouterr().out)
    # The time budget (--budget-seconds, 360 s) counts from the call, not from the start of this process: a test
    # worker that has run for minutes would otherwise see every case "skipped: would pass the budget".
    assert 0 < out["elapsed_s"] <= took, (out["elapsed_s"], took)
    assert [c["placement"] for c in out["cases"]] == ["none", "group"]
    for c in out["cases"]:
        assert c["status"].startswith("refused by plan: wan2.2-gpucheck-a14b: 64x64, 9 frames"), c["status"]
        assert "step_s" not in c and c["plan_peak_bytes"] > 0.001 * 2**30


def test_gpu_check_skips_the_cases_that_would_pass_the_time_budget(capsys: pytest.CaptureFixture[str]) -> None:
    # As the script counts its own process's start: a clock started long ago leaves no time for any case.
    from bench import gpu_check

    assert gpu_check.main(["--tiny", "--json", "--budget-seconds", "60", "--policies", "none", "--formats", "bf16",
                           "--decode", "none"], started=time.time() - 61) == 0
    out = json.loads(capsys.readouterr().out)
    assert [c["status"] for c in out["cases"]] == ["skipped: would pass the 60 s budget (longest case 0 s)"]
    assert out["elapsed_s"] > 60


class _FakeEngine:
    """Stands in for GenerationEngine: raises `error` at one stage of bench.gpu_check.run_case."""

    stage = ""
    error: BaseException = RuntimeError()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        import torch

        self.device = torch.device("cpu")

    def _maybe(self, stage: str) -> None:
        if stage == self.stage:
            raise self.error

    def validate(self, req: Any) -> None:
        self._maybe("plan")

    def exclusive(self, model: str, req: Any) -> Any:
        self._maybe("load")
        raise AssertionError("not reached in these tests")

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("stage", "error", "status"),
    [
        ("plan", ResourceError("needs 31.0 GiB, the budget is 24.0 GiB"), "refused by plan: needs 31.0 GiB"),
        ("load", ResourceError("model 'x' does not fit in GPU memory placed as none"), "out of memory (load): model"),
        ("load", RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), "out of memory (load): CUDA out"),
        ("plan", NotImplementedError("no planner"), "error: NotImplementedError (plan): no planner"),
    ],
)
def test_refusals_and_out_of_memory_are_rows_not_crashes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stage: str, error: BaseException, status: str
) -> None:
    from artifex_agent.engines.generation import GenerationRequest
    from bench import gpu_check

    monkeypatch.setattr(_FakeEngine, "stage", stage)
    monkeypatch.setattr(_FakeEngine, "error", error)
    monkeypatch.setattr(gpu_check, "GenerationEngine", _FakeEngine)
    row, output = gpu_check.run_case(tmp_path, "none", "bf16", GenerationRequest(model="m", prompts=["a cat"]),
                                     device="cpu", fraction=0.0, vae_tiling="auto")
    assert row["status"].startswith(status) and output is None
    assert row["case_s"] >= 0 and "step_s" not in row


def test_extrapolation_counts_the_blocks_each_policy_keeps_on_the_gpu() -> None:
    from bench.gpu_check import extrapolate

    base = {"blocks": 2, "block_bytes": 100, "nonblock_bytes": 30, "step_s": 8.0, "denoise_peak_bytes": 1000}
    rows = {p: {**base, "policy": p} for p in ("none", "model", "group", "sequential")}
    for row in rows.values():
        extrapolate(row, passes=2, cap=5000)
    assert rows["none"]["block_s"] == 2.0 and rows["none"]["step_s_40"] == 160.0
    assert rows["none"]["weights_bytes_40"] == 30 + 40 * 100
    assert rows["none"]["projected_peak_bytes_40"] == 1000 + 38 * 100 * 2
    assert rows["model"]["projected_peak_bytes_40"] == 1000 + 38 * 100
    assert rows["group"]["projected_peak_bytes_40"] == rows["sequential"]["projected_peak_bytes_40"] == 1000
    assert not rows["none"]["fits_cap_40"] and rows["model"]["fits_cap_40"]


def test_table_lines_up_and_shows_missing_values_as_a_dash() -> None:
    from bench.vram import fixed, table

    text = table([{"a": "none", "b": 1.5}, {"a": "sequential"}], [("a", "placement", str), ("b", "s", fixed(2))])
    lines = text.splitlines()
    assert lines[0].split() == ["placement", "s"]
    assert lines[2].split() == ["none", "1.50"] and lines[3].split() == ["sequential", "-"]
    assert lines[2].index("1.50") == lines[3].index("-")


def test_gpu_check_script_skips_without_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the script would run the whole check")
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-check.sh")], env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "no CUDA device: skipped"

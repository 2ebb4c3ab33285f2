"""bench/vram: seconds per step and peak memory of each placement (offload policy x weight storage), in one run.

One tiny two-expert checkpoint (t2v-a14b, built offline in a temp folder) runs the same job under
every placement this device can do: on the CPU none, model, group, none+fp8 and group+fp8; on CUDA
also sequential. Each placement gets a fresh engine, a warm-up job (it loads there) and a timed job.
Reported per placement:
  - seconds per denoising step, from the engine's on_step timestamps (the first step counted from the
    generate call), and the ratio against the "none" placement measured in the same run;
  - peak memory of the timed job. On CUDA: torch.cuda.max_memory_allocated after a reset at the job's
    start, so the weights resident on the GPU count. On the CPU: the growth of the process's peak RSS
    during the job; offload cannot lower it there (the "offload device" is the same RAM), so the
    column says what the hooks and fp8 casts cost, not what they save;
  - on the CPU also the peak of live tensor bytes, counted op by op in a third job: RSS moves with the
    allocator's state from run to run, this count does not;
  - whether the frames equal the "none" run's bit for bit (offload moves weights, it must not change
    a bit), and for fp8 storage the largest per-pixel difference instead.

    .venv/bin/python -m bench.vram [--steps 4] [--frames 17] [--size 256x256] [--placements none,group+fp8] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import gc
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from artifex_agent.engines.generation import GenerationEngine, GenerationRequest, GenerationResult
from artifex_agent.engines.placement import Placement
from bench._common import workdir

MODEL = "wan2.2-bench-vram-a14b"
# Wider and deeper than the test model, so a step is mostly transformer work, still a second or two on one core.
CHECKPOINT = {"layers": 4, "heads": 4, "head_dim": 32, "ffn_dim": 512, "text_dim": 64}
PROMPT = "a red fox running through snow"
CPU_PLACEMENTS = ("none", "model", "group", "none+fp8", "group+fp8")
CUDA_PLACEMENTS = ("none", "model", "group", "sequential", "none+fp8", "group+fp8")
CUDA_METRIC = "cuda max_memory_allocated (reset at the job's start: weights resident on the GPU count)"
RSS_METRIC = "cpu peak RSS growth during the job (offload cannot lower it on the CPU: it is the same RAM)"
MIB = 2**20


# ------------------------------------------------------------------------------------------ memory


def _proc_status(field: str) -> int | None:
    """A kB figure of /proc/self/status in bytes (Linux), or None."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def rss_bytes() -> int:
    rss = _proc_status("VmRSS")
    if rss is not None:
        return rss
    import psutil

    return int(psutil.Process().memory_info().rss)


def _reset_peak_rss() -> bool:
    """Set the kernel's peak-RSS mark (VmHWM) back to the current RSS; False where Linux does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return _proc_status("VmHWM") is not None


def _malloc_trim() -> None:
    """Hand glibc's free pages back, so a job's growth is not hidden by memory the last one freed."""
    name = ctypes.util.find_library("c")
    if not name or sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(name).malloc_trim(0)


class _RssSampler:
    """Peak RSS by polling, where the kernel's mark cannot be reset (not Linux, or a locked-down /proc)."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes())

    def reset(self) -> None:
        self.peak = rss_bytes()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, rss_bytes())


class MemoryProbe:
    """Peak memory of a stretch of work: the CUDA allocator's peak on a GPU, peak RSS growth on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.metric = CUDA_METRIC if self.cuda else RSS_METRIC
        self._base = 0
        self._sampler: _RssSampler | None = None

    def sync(self) -> None:
        """Wait for the GPU, so a timestamp or a peak covers the work queued so far."""
        if self.cuda:
            torch.cuda.synchronize()

    def start(self) -> None:
        """Begin: on CUDA the peak restarts at what is allocated now; on the CPU growth counts from now."""
        self.stop()
        if self.cuda:
            self.reset_peak()
            return
        gc.collect()
        _malloc_trim()
        self._base = rss_bytes()
        self.reset_peak()

    def resident(self) -> int:
        """What is held now: allocated CUDA memory, or the process's RSS."""
        if self.cuda:
            return int(torch.cuda.memory_allocated())
        return rss_bytes()

    def reset_peak(self) -> None:
        self.sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        elif self._sampler is not None:
            self._sampler.reset()
        elif not _reset_peak_rss():
            self._sampler = _RssSampler()

    def peak(self) -> int:
        """Peak since the last start or reset: allocated bytes on CUDA, RSS growth over the start on the CPU."""
        self.sync()
        if self.cuda:
            return int(torch.cuda.max_memory_allocated())
        if self._sampler is not None:
            return max(self._sampler.peak, rss_bytes()) - self._base
        return max((_proc_status("VmHWM") or 0) - self._base, 0)

    def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()
            self._sampler = None


# ------------------------------------------------------------------------------------------ one job


@dataclass
class JobTiming:
    """One generate call: when each step ended (seconds from the call), its end, and its memory peaks."""

    result: GenerationResult
    step_at: list[float]
    total_s: float
    denoise_peak: int  # up to the end of the last step
    job_peak: int  # over the whole call, the VAE decode included

    @property
    def step_s(self) -> list[float]:
        """Each step's seconds; the first counts from the call (embeddings, latents, a first onload)."""
        return [b - a for a, b in zip([0.0, *self.step_at], self.step_at, strict=False)]

    @property
    def s_per_step(self) -> float:
        return self.step_at[-1] / len(self.step_at)

    @property
    def steady_step_s(self) -> float:
        """The median step after the first (the call's own set-up left out), or the only one."""
        steps = self.step_s
        return statistics.median(steps[1:]) if len(steps) > 1 else steps[0]

    @property
    def after_steps_s(self) -> float:
        """From the last step to the end of the call: the VAE decode (or the copy of the latents)."""
        return self.total_s - self.step_at[-1]


def timed_job(engine: GenerationEngine, req: GenerationRequest, probe: MemoryProbe) -> JobTiming:
    """Run one job, timing each step (the GPU synced first) and splitting its memory peak at the last step."""
    marks: list[float] = []
    peaks: list[int] = []
    started = 0.0

    def on_step(i: int, n: int) -> None:
        probe.sync()
        marks.append(time.perf_counter() - started)
        if i == n:
            peaks.append(probe.peak())
            probe.reset_peak()

    probe.start()
    started = time.perf_counter()
    try:
        result = engine.generate(req, on_step=on_step)
        probe.sync()
        total = time.perf_counter() - started
        after = probe.peak()
    finally:
        probe.stop()
    denoise = peaks[0] if peaks else after
    return JobTiming(result, marks, total, denoise, max(denoise, after))


def tensor_peaks(engine: GenerationEngine, req: GenerationRequest) -> tuple[int, int] | None:
    """Peak live tensor bytes (denoising, whole job) of one more job, counted op by op; None without the counter.

    RSS growth on the CPU moves with the allocator's state from run to run; this count does not (it is
    tests/engines/memtrack.PeakMemory, the one the memory planner's formulas are checked with). Not on
    CUDA, where the allocator's own statistics are exact.
    """
    try:
        from tests.engines.memtrack import PeakMemory
    except ImportError:
        return None
    marks: list[int] = []
    with PeakMemory() as counter:
        engine.generate(req, on_step=lambda i, n: marks.append(counter.peak) if i == n else None)
    return (marks[0] if marks else counter.peak), counter.peak


def output_of(result: GenerationResult) -> np.ndarray:
    """The frames (or the latents, for output="latent") as an array to compare."""
    if result.frames is not None:
        return result.frames
    assert result.latents is not None
    return result.latents.numpy()


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


# ------------------------------------------------------------------------------------------ output


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, Callable[[Any], str]]]) -> str:
    """Rows as a plain text table: columns are (key, header, format)."""
    cells = [[fmt(row.get(key)) if row.get(key) is not None else "-" for key, _, fmt in columns] for row in rows]
    headers = [header for _, header, _ in columns]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)).rstrip() for cell in cells]
    return "\n".join(lines)


def fixed(digits: int) -> Callable[[Any], str]:
    return lambda v: f"{v:.{digits}f}"


def mib(v: Any) -> str:
    return f"{v / MIB:.1f}"


def gib(v: Any) -> str:
    return f"{v / 2**30:.2f}"


# ------------------------------------------------------------------------------------------ the bench


def quiet_progress_bars() -> None:
    """No per-component loading bars: a bench loads the model once per placement, the table is what counts."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def parse_placement(label: str) -> Placement:
    policy, _, storage = label.partition("+")
    if storage not in ("", "fp8"):
        raise SystemExit(f"placement {label!r}: write POLICY or POLICY+fp8 (e.g. group+fp8)")
    return Placement(policy, storage == "fp8")


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--size {text!r}: write WIDTHxHEIGHT, e.g. 256x256") from None
    return w, h


@contextlib.contextmanager
def tiny_model() -> Iterator[Path]:
    """A models root holding the bench checkpoint, removed afterwards."""
    from artifex_agent.engines.checkpoint import ensure_tiny_checkpoint

    root = workdir("vram")
    try:
        ensure_tiny_checkpoint(root, MODEL, variant="t2v-a14b", **CHECKPOINT)  # type: ignore[arg-type]
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def measure(root: Path, placement: Placement, req: GenerationRequest) -> tuple[dict[str, Any], np.ndarray | None]:
    """Warm-up and timed job under one placement, in a fresh engine; an error is a row, not a crash."""
    row: dict[str, Any] = {"placement": placement.label, "policy": placement.policy,
                           "weight_storage": "fp8" if placement.fp8 else "native", "status": "ok"}
    engine = GenerationEngine(root, device="auto", offload=placement.policy,
                              weight_storage="fp8" if placement.fp8 else "native")
    probe = MemoryProbe(engine.device)
    out: np.ndarray | None = None
    try:
        started = time.perf_counter()
        engine.generate(req)
        row["load_and_warmup_s"] = time.perf_counter() - started
        row["resident_bytes"] = probe.resident()
        job = timed_job(engine, req, probe)
        actual = engine.placement_of(req.model)
        if actual != placement:
            row["status"] = f"placed as {actual.label if actual else 'nothing'}, not {placement.label}"
        out = output_of(job.result)
        row.update(s_per_step=job.s_per_step, step_s=job.step_s, decode_s=job.after_steps_s, job_s=job.total_s,
                   denoise_peak_bytes=job.denoise_peak, peak_bytes=job.job_peak)
        counted = tensor_peaks(engine, req) if not probe.cuda else None
        if counted is not None:
            row["denoise_tensor_peak_bytes"], row["tensor_peak_bytes"] = counted
    except Exception as exc:  # noqa: BLE001 - one placement failing must not hide the others' figures
        row["status"] = f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        engine.close()
    return row, out


def compare(rows: list[dict[str, Any]], outputs: dict[str, np.ndarray]) -> None:
    """Ratios and frame equality against the "none" row (the first row when none was not run)."""
    ok = [r for r in rows if r["status"] == "ok"]
    base = next((r for r in ok if r["placement"] == "none"), ok[0] if ok else None)
    if base is None:
        return
    reference = outputs[base["placement"]]
    for row in ok:
        row["baseline"] = base["placement"]
        row["s_per_step_vs_baseline"] = row["s_per_step"] / base["s_per_step"]
        if base["denoise_peak_bytes"]:
            row["denoise_peak_vs_baseline"] = row["denoise_peak_bytes"] / base["denoise_peak_bytes"]
        frames = outputs[row["placement"]]
        row["frames_equal_baseline"] = bool(frames.shape == reference.shape and np.array_equal(frames, reference))
        row["max_abs_diff"] = max_abs_diff(frames, reference)


COLUMNS: list[tuple[str, str, Callable[[Any], str]]] = [
    ("placement", "placement", str),
    ("s_per_step", "s/step", fixed(3)),
    ("s_per_step_vs_baseline", "vs none", fixed(2)),
    ("decode_s", "decode s", fixed(3)),
    ("denoise_peak_bytes", "denoise peak MiB", mib),
    ("denoise_peak_vs_baseline", "vs none", fixed(2)),
    ("peak_bytes", "job peak MiB", mib),
    ("denoise_tensor_peak_bytes", "denoise tensors MiB", mib),
    ("frames_equal_baseline", "same bits", lambda v: "yes" if v else "no"),
    ("max_abs_diff", "max |diff|", fixed(0)),
    ("status", "status", str),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--size", default="256x256", help="WIDTHxHEIGHT of the clip")
    parser.add_argument("--placements", default="",
                        help="comma-separated, e.g. none,group,group+fp8 (default: all this device can do)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (one, as the other benches)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    width, height = parse_size(args.size)
    quiet_progress_bars()
    cuda = torch.cuda.is_available()
    if not cuda:
        torch.set_num_threads(args.threads)
    labels = [s.strip() for s in args.placements.split(",") if s.strip()] or list(
        CUDA_PLACEMENTS if cuda else CPU_PLACEMENTS)
    placements = [parse_placement(label) for label in labels]
    req = GenerationRequest(model=MODEL, prompts=[PROMPT], width=width, height=height, num_frames=args.frames,
                            steps=args.steps, guidance_scale=3.5, guidance_scale_2=3.5, seed=1)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    outputs: dict[str, np.ndarray] = {}
    with tiny_model() as root:
        for placement in placements:
            row, out = measure(root, placement, req)
            rows.append(row)
            if out is not None:
                outputs[placement.label] = out
    compare(rows, outputs)
    device = torch.cuda.get_device_name() if cuda else "cpu"
    results = {
        "device": device, "torch_threads": torch.get_num_threads(),
        "memory_metric": CUDA_METRIC if cuda else RSS_METRIC,
        "size": f"{width}x{height}", "frames": args.frames, "steps": args.steps, "guidance": 3.5,
        "checkpoint": {"variant": "t2v-a14b", **CHECKPOINT}, "placements": rows,
        "bench_s": time.perf_counter() - started,
    }
    if args.json:
        import json

        json.dump(results, sys.stdout, indent=2)
        print()
    else:
        print(f"device {device}, {results['torch_threads']} torch thread(s); {args.size}, {args.frames} frames, "
              f"{args.steps} steps, CFG 3.5; tiny t2v-a14b {CHECKPOINT}")
        print(f"peak memory: {results['memory_metric']}\n")
        print(table(rows, COLUMNS))
        print(f"\nbench {results['bench_s']:.1f} s")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""bench/lora: the 4-step LoRA recipe against the model's own 40 steps with CFG, and what a LoRA switch costs.

On a two-expert tiny checkpoint made heavier (so the transformer dominates), in one engine, one thread:
  - seconds per job for (a) the model's defaults: 40 UniPC steps, guidance 4 (two passes a step), and
    (b) the fast recipe: 4 flow-match Euler steps, guidance 1, a high-noise LoRA and a low-noise LoRA;
    the ratio of transformer passes and of time, (a) over (b);
  - seconds per fast job without LoRAs, with the same LoRA pair every job (resident), alternating two
    pairs that both stay resident (a switch is set_adapters), and alternating two pairs under a budget
    that holds one pair (every job reloads: the cost of a LoRA switch from disk), each as % over no LoRA.
Outputs are latents (the VAE decode is the same work either way).

    .venv/bin/python -m bench.lora [--repeats 3] [--size 192x192] [--frames 17] [--json]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from artifex_agent.engines.checkpoint import build_tiny_checkpoint
from artifex_agent.engines.generation import GenerationEngine, GenerationRequest
from artifex_agent.engines.lora import tiny_lora
from artifex_agent.lora_ref import LoraRef
from bench._common import emit, workdir

MODEL = "wan2.2-bench-a14b"
CHECKPOINT = {"layers": 4, "heads": 4, "head_dim": 32, "ffn_dim": 512, "text_dim": 64}
TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2")
# Rank 2 on width 128 adds what lightx2v's rank 64 adds on Wan2.2 A14B's 5120 (~3% of a projection's work).
RANK = 2
PAIRS = {
    "one": (LoraRef("lightning-high", 1.0, "high"), LoraRef("lightning-low", 1.0, "low")),
    "two": (LoraRef("style-high", 1.0, "high"), LoraRef("style-low", 1.0, "low")),
}


def _build(root: Path) -> int:
    """The checkpoint and four LoRAs under root; the bytes of one LoRA pair."""
    build_tiny_checkpoint(root / MODEL, variant="t2v-a14b", **CHECKPOINT)  # type: ignore[arg-type]
    (root / "loras").mkdir()
    pair_bytes = 0
    for seed, ref in enumerate((*PAIRS["one"], *PAIRS["two"])):
        state = tiny_lora(root / MODEL, seed=seed, rank=RANK, targets=TARGETS)
        save_file(state, str(root / "loras" / f"{ref.name}.safetensors"))
        if seed < 2:
            pair_bytes += sum(t.numel() * t.element_size() for t in state.values())
    return pair_bytes


def _job(args: argparse.Namespace, **changes: Any) -> GenerationRequest:
    w, h = (int(x) for x in args.size.lower().split("x"))
    req = GenerationRequest(model=MODEL, prompts=["a red fox running through snow"], width=w, height=h,
                            num_frames=args.frames, output="latent")
    for key, value in changes.items():
        setattr(req, key, value)
    return req


def _count_passes(engine: GenerationEngine) -> list[int]:
    pipe = engine.load(MODEL)
    passes = [0]
    for module in (pipe.transformer, pipe.transformer_2):
        module.register_forward_pre_hook(lambda *_: passes.__setitem__(0, passes[0] + 1))
    return passes


def _timed(engine: GenerationEngine, jobs: list[GenerationRequest]) -> float:
    """Median seconds per job over `jobs`, after one warm-up run of the first."""
    engine.generate(jobs[0])
    seconds = []
    for req in jobs:
        seconds.append(_seconds(engine, req))
    return statistics.median(seconds)


def _seconds(engine: GenerationEngine, req: GenerationRequest) -> float:
    started = time.perf_counter()
    engine.generate(req)
    return time.perf_counter() - started


def _interleaved(engine: GenerationEngine, rounds: int, sequence: list[tuple[str, GenerationRequest]]
                 ) -> dict[str, float]:
    """Median seconds per label, the sequence repeated `rounds` times (a label "" runs untimed), after a warm-up."""
    for _, req in sequence:
        engine.generate(req)
    times: dict[str, list[float]] = {}
    for _ in range(rounds):
        for label, req in sequence:
            took = _seconds(engine, req)
            if label:
                times.setdefault(label, []).append(took)
    return {label: statistics.median(values) for label, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.lora", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", default="192x192")
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    root = workdir("lora")
    try:
        pair_bytes = _build(root)
        n = args.repeats
        quality = _job(args, steps=40, guidance_scale=4.0)
        fast = _job(args, steps=4, guidance_scale=1.0, scheduler="euler", loras=PAIRS["one"])
        bare = _job(args, steps=4, guidance_scale=1.0, scheduler="euler")
        other = _job(args, steps=4, guidance_scale=1.0, scheduler="euler", loras=PAIRS["two"])
        results: dict[str, Any] = {"model": MODEL, "size": args.size, "frames": args.frames, "repeats": n}
        engine = GenerationEngine(root, device="cpu", offload="none", weight_storage="native")
        try:
            passes = _count_passes(engine)
            for label, req in (("quality", quality), ("fast", fast)):
                passes[0] = 0
                engine.generate(req)
                results[f"{label}_transformer_passes"] = passes[0]
            results["quality_s_per_job"] = _timed(engine, n * [quality])
            results["fast_s_per_job"] = _timed(engine, n * [fast])
            results["passes_ratio"] = results["quality_transformer_passes"] / results["fast_transformer_passes"]
            results["time_ratio"] = results["quality_s_per_job"] / results["fast_s_per_job"]
            # Interleaved, so a busy neighbour slows every case alike: a job after the same kind of job
            # (no LoRA; the same pair: resident), and a job after the other pair (a switch, both resident).
            timed = _interleaved(engine, 3 * n, [("", bare), ("no_lora", bare), ("", fast), ("resident", fast),
                                                 ("switch_resident", other), ("switch_resident", fast)])
        finally:
            engine.close()
        # A budget that holds one pair: alternating pairs loads the next pair from disk every job.
        engine = GenerationEngine(root, device="cpu", offload="none", weight_storage="native",
                                  lora_budget_bytes=pair_bytes)
        try:
            reload = _interleaved(engine, 3 * n, [("", bare), ("no_lora_2", bare), ("switch_reload", fast),
                                                  ("switch_reload", other)])
        finally:
            engine.close()
        for key, seconds in (*timed.items(), *reload.items()):
            results[f"{key}_s_per_job"] = seconds
        for key, base in (("resident", "no_lora"), ("switch_resident", "no_lora"), ("switch_reload", "no_lora_2")):
            results[f"{key}_added_pct"] = 100.0 * (results[f"{key}_s_per_job"] / results[f"{base}_s_per_job"] - 1)
        results["reload_added_s_per_switch"] = (results["switch_reload_s_per_job"] - results["no_lora_2_s_per_job"]
                                                - (results["resident_s_per_job"] - results["no_lora_s_per_job"]))
        emit(results, args.json)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

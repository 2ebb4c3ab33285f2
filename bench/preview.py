"""bench/preview: what live previews cost the denoising loop (goal: at most 3% slower with one every step).

One engine on the tiny checkpoint, one torch thread: the same job (latents out, so no decode)
without previews and with a preview every step, alternating, `--repeats` times each. Seconds
per step are timed between the first and the last step callback (loading and prompts left out);
the previews' own encoding runs on their thread, and the step loop waits only for the projection.
The agent's rate limit applies (engines/previews.py MIN_INTERVAL_S: a preview at most every
0.25 s, the last step's always), as on a real agent: "every step" on fast steps means that often.
Prints seconds per step with and without previews (medians), their ratio (and the ratio of the
fastest jobs, steadier on a shared machine), the previews sent per job and their mean size in bytes.

    .venv/bin/python -m bench.preview [--repeats 7] [--steps 40] [--size 256x256] [--frames 17] [--device auto]
        [--json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from bench._common import emit, workdir

MODEL = "wan2.2-bench-preview"


def _per_step(engine: Any, req: Any, previews: list[Any] | None) -> float:
    """Seconds per denoising step of one job, from the step callbacks' times."""
    marks: list[float] = []
    engine.generate(req, on_step=lambda step, total: marks.append(time.perf_counter()),
                    on_preview=previews.append if previews is not None else None)
    return (marks[-1] - marks[0]) / (len(marks) - 1)


def run(*, repeats: int = 7, steps: int = 40, size: str = "256x256", frames: int = 17,
        device: str = "auto") -> dict[str, Any]:
    import dataclasses

    import torch

    from artifex_agent.engines.checkpoint import ensure_tiny_checkpoint
    from artifex_agent.engines.generation import GenerationEngine, GenerationRequest

    torch.set_num_threads(1)
    root = workdir("preview")
    ensure_tiny_checkpoint(root, MODEL, variant="t2v")
    w, h = (int(x) for x in size.lower().split("x"))
    engine = GenerationEngine(root, device=device, max_width=max(w, 1920), max_height=max(h, 1920))
    plain = GenerationRequest(model=MODEL, prompts=["a red fox running through snow"], width=w, height=h,
                              num_frames=frames, steps=steps, seed=1, output="latent")
    every_step = dataclasses.replace(plain, preview_every=1)
    try:
        _per_step(engine, plain, None)  # load and warm up
        without, with_previews, sent = [], [], []
        for _ in range(repeats):
            without.append(_per_step(engine, plain, None))
            got: list[Any] = []
            with_previews.append(_per_step(engine, every_step, got))
            sent.append(got)
    finally:
        engine.close()
    base, previewed = statistics.median(without), statistics.median(with_previews)
    sizes = [len(p.data) for job in sent for p in job]
    return {
        "device": str(engine.device),
        "size": f"{w}x{h}x{frames}",
        "steps": steps,
        "s_per_step_without": base,
        "s_per_step_with_previews": previewed,
        "ratio": previewed / base,
        # The fastest job of each kind: what is left when a busy neighbour's noise is taken out.
        "ratio_best": min(with_previews) / min(without),
        "goal_ratio": 1.03,
        "previews_per_job": statistics.median(len(job) for job in sent),
        "preview_bytes_mean": statistics.mean(sizes) if sizes else 0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.preview", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--size", default="256x256")
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    emit(run(repeats=args.repeats, steps=args.steps, size=args.size, frames=args.frames, device=args.device),
         args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

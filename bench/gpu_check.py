"""bench/gpu_check: would Wan2.2 A14B run in 24 GiB, how fast, under each placement, in under 6 minutes of GPU.

A real A14B expert is 40 transformer blocks of width 5120 (14 B parameters, 28 GB in bf16): building and
loading two of them would take the whole budget. So this builds random weights at the real widths
(40 heads x 128 = 5120, FFN 13824, text 4096, the real Wan VAE: base_dim 96, z_dim 16) with 2 blocks per
expert, two experts, once in bf16 and once as GGUF Q8_0 files named in an experts.toml, and runs the real
job: 1280x720, 81 frames, 2 steps (one on each expert), CFG 3.5 (two passes a step), under a 24 GiB cap
(GenerationEngine(memory_fraction=24 GiB / total)). Every placement x weight format runs in a fresh engine:
  policies  none, model, group, sequential
  formats   bf16 (native), fp8 storage (bf16 weights stored as e4m3), GGUF Q8_0
A placement the memory plan refuses (ResourceError before loading) is a row "refused by plan", an
out-of-memory a row "out of memory": results, not crashes. Measured per row: load seconds, the second
step's seconds (the first carries the call's set-up), per-block seconds (step / blocks / passes), peak
VRAM (torch.cuda.max_memory_allocated, reset once the model is loaded: resident weights count) up to the
end of the denoising, beside the memory plan's estimate of the same phase (engines.memplan, from the
configs and headers), and the parameter bytes of one block and of everything else in an expert. Then the
40-block figures, extrapolated (estimates, not measurements):
  weights per expert   = non-block bytes + 40 x block bytes
  step time            = 40 x block seconds x passes
  denoise peak         = measured peak + 38 x block bytes x experts held on the GPU (none 2, model 1,
                         group and sequential 0: they stream blocks)
Cases return latents (compared bit for bit with the same format's "none" run); the VAE decode (720p,
81 frames: the same work under every placement) runs once, as the first group case's job run again whole
(--decode all: every case decodes, none: no decode). `--budget-seconds` skips the cases that would end past
the budget (build included), so the check ends in time; `--tiny` runs the same code with tiny widths on
the CPU in seconds (the test suite runs it).

    .venv/bin/python -m bench.gpu_check [--json [FILE]] [--tiny] [--policies none,group] [--formats bf16,gguf]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from artifex_agent.engines.generation import GenerationEngine, GenerationRequest
from artifex_agent.engines.gpu import configure_allocator, is_oom, release_memory
from artifex_agent.engines.models import resolve_model
from artifex_agent.engines.placement import Placement
from artifex_agent.errors import ResourceError
from bench._common import workdir
from bench.vram import (
    MemoryProbe,
    fixed,
    gib,
    max_abs_diff,
    mib,
    output_of,
    parse_size,
    quiet_progress_bars,
    table,
    timed_job,
)

GIB = 2**30
MODEL = "wan2.2-gpucheck-a14b"
MODEL_GGUF = "wan2.2-gpucheck-a14b-gguf"
EXPERTS = ("transformer", "transformer_2")
GGUF_FILES = {"transformer": "high.gguf", "transformer_2": "low.gguf"}
POLICIES = ("none", "model", "group", "sequential")
FORMATS = ("bf16", "fp8", "gguf")
# Run order: the resident baseline first (the reference bits), then what a 24 GiB card would use, slowest last,
# so a budget cut loses the least useful rows.
ORDER = (("none", "bf16"), ("group", "bf16"), ("group", "fp8"), ("group", "gguf"), ("model", "bf16"),
         ("model", "fp8"), ("model", "gguf"), ("none", "fp8"), ("none", "gguf"), ("sequential", "bf16"),
         ("sequential", "fp8"), ("sequential", "gguf"))
# Experts whose every block sits on the GPU during a step, by policy (group and sequential stream blocks).
EXPERTS_ON_GPU = {"none": 2, "model": 1, "group": 0, "sequential": 0}
TARGET_BLOCKS = 40
PROMPT = "a red fox running through snow, cinematic"


@dataclass(frozen=True)
class Dims:
    """Widths of the checkpoint built here (A14B's, or tiny ones for --tiny)."""

    heads: int
    head_dim: int
    ffn_dim: int
    text_dim: int
    blocks: int
    vae_dim: int

    @property
    def width(self) -> int:
        return self.heads * self.head_dim


A14B = Dims(heads=40, head_dim=128, ffn_dim=13824, text_dim=4096, blocks=2, vae_dim=96)
# Rows of 32 or more everywhere: whole Q8_0 blocks, so the tiny GGUF is quantized as the real one is.
TINY = Dims(heads=2, head_dim=32, ffn_dim=128, text_dim=32, blocks=2, vae_dim=8)
JOB: dict[str, Any] = {"size": "1280x720", "frames": 81, "steps": 2}
TINY_JOB: dict[str, Any] = {"size": "64x64", "frames": 9, "steps": 2}


# ------------------------------------------------------------------------------------------ checkpoint


def _gguf_writer() -> tuple[Callable[..., Path] | None, str]:
    """tests/engines/gguf_fixture.write_gguf_expert, or None and why (then the GGUF rows say so)."""
    try:
        from tests.engines.gguf_fixture import write_gguf_expert
    except ImportError as exc:
        return None, (f"no GGUF writer: tests/engines/gguf_fixture.py (write_gguf_expert) cannot be imported "
                      f"({exc}); run from the repository root with the gguf package installed")
    return write_gguf_expert, ""


def _expert(dims: Dims, seed: int) -> Any:
    """A random Wan2.2 expert at these widths, made in bf16 directly (no fp32 copy to build and convert)."""
    from diffusers import WanTransformer3DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            # Every other argument is diffusers' default, which is Wan2.2 A14B's config.
            return WanTransformer3DModel(num_attention_heads=dims.heads, attention_head_dim=dims.head_dim,
                                         ffn_dim=dims.ffn_dim, text_dim=dims.text_dim, num_layers=dims.blocks,
                                         in_channels=16, out_channels=16)
        finally:
            torch.set_default_dtype(previous)


def _vae(dims: Dims, seed: int) -> Any:
    """The Wan2.1/2.2-A14B VAE's architecture (diffusers' defaults) at base width `vae_dim`, random weights."""
    from diffusers import AutoencoderKLWan

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKLWan(base_dim=dims.vae_dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                                temperal_downsample=[False, True, True])


def _replace(folder: Path, module: Any) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    module.save_pretrained(str(folder), safe_serialization=True)


def _link(src: str, dst: str) -> None:
    """Hard-link a file of the bf16 model into the GGUF one (same temp folder), copying where links fail."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def build_bf16(folder: Path, dims: Dims, seed: int = 0) -> None:
    """The bf16 model: the tiny builder's tokenizer, scheduler and text encoder (at text_dim), then wide parts."""
    from artifex_agent.engines.checkpoint import build_tiny_checkpoint

    # The tiny transformers and VAE written here are replaced below; the text encoder's width is text_dim.
    build_tiny_checkpoint(folder, variant="t2v-a14b", seed=seed, layers=1, heads=2, head_dim=16, ffn_dim=32,
                          text_dim=dims.text_dim, vae_dim=4)
    for i, component in enumerate(EXPERTS):
        expert = _expert(dims, seed + 1 + i)
        _replace(folder / component, expert)
        del expert
    _replace(folder / "vae", _vae(dims, seed + 3))


def build_gguf(src: Path, dst: Path, writer: Callable[..., Path]) -> None:
    """The same model with its experts as GGUF Q8_0 files named in experts.toml (the component folders keep
    their config.json only: a single file holds weights, diffusers takes the shape from the config)."""

    def weights_of_experts(folder: str, names: list[str]) -> list[str]:
        if Path(folder).name not in EXPERTS:
            return []
        return [n for n in names if ".safetensors" in n]

    shutil.copytree(src, dst, copy_function=_link, ignore=weights_of_experts)
    # Two experts, two threads: the quantization is numpy work on big arrays, which releases the GIL.
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = [pool.submit(writer, src, c, dst / GGUF_FILES[c], qtype="Q8_0") for c in EXPERTS]
        for future in done:
            future.result()
    lines = [f'{c} = "{GGUF_FILES[c]}"' for c in EXPERTS]
    (dst / "experts.toml").write_text("# bench.gpu_check: the experts as GGUF Q8_0\n" + "\n".join(lines) + "\n",
                                      encoding="utf-8")


def ensure_models(root: Path, dims: Dims, gguf: bool) -> dict[str, Any]:
    """Build (or find, in a reused --workdir) both model folders; returns what was built and how long it took."""
    marker = root / "gpu_check.json"
    wanted = {"dims": asdict(dims), "gguf": gguf}
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == wanted:
        return {"reused": True, "build_s": 0.0, "gguf_s": 0.0}
    for name in (MODEL, MODEL_GGUF):
        shutil.rmtree(root / name, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    build_bf16(root / MODEL, dims)
    built = time.perf_counter()
    writer, _ = _gguf_writer()
    if gguf and writer is not None:
        build_gguf(root / MODEL, root / MODEL_GGUF, writer)
    marker.write_text(json.dumps(wanted), encoding="utf-8")
    return {"reused": False, "build_s": built - started, "gguf_s": time.perf_counter() - built}


# ------------------------------------------------------------------------------------------ one case


def _nbytes(params: Any) -> int:
    # GGUF weights are uint8 tensors of the packed blocks, fp8 ones 1 byte an element: numel x size is the storage.
    return sum(p.numel() * p.element_size() for p in params)


def expert_bytes(pipe: Any) -> dict[str, int]:
    """One expert's parameter bytes as stored now: one block, all blocks, and everything else."""
    expert = pipe.transformer if pipe.transformer is not None else pipe.transformer_2
    total = _nbytes(expert.parameters())
    blocks = [_nbytes(b.parameters()) for b in expert.blocks]
    return {"blocks": len(blocks), "block_bytes": max(blocks), "nonblock_bytes": total - sum(blocks),
            "expert_bytes": total}


def extrapolate(row: dict[str, Any], passes: int, cap: int | None) -> None:
    """The 40-block figures of the module docstring, from a row's measurements."""
    blocks, block = row["blocks"], row["block_bytes"]
    row["block_s"] = row["step_s"] / blocks / passes
    row["step_s_40"] = TARGET_BLOCKS * row["block_s"] * passes
    row["weights_bytes_40"] = row["nonblock_bytes"] + TARGET_BLOCKS * block
    row["projected_peak_bytes_40"] = (row["denoise_peak_bytes"]
                                      + (TARGET_BLOCKS - blocks) * block * EXPERTS_ON_GPU[row["policy"]])
    row["fits_cap_40"] = row["projected_peak_bytes_40"] <= cap if cap else None


def plan_estimate(engine: GenerationEngine, root: Path, req: GenerationRequest, placement: Placement) -> dict[str, Any]:
    """The memory plan's estimate of this job under this placement, by phase, to set beside what was measured."""
    try:
        entry = resolve_model(root, req.model)
        plans = engine.planner.model_plan(entry, req, [placement], engine.planner.budget())
        est = plans[placement.fp8].estimate_for(placement.policy)
    except Exception as exc:  # noqa: BLE001 - a figure missing from the report, not a failed case
        return {"plan_error": f"{type(exc).__name__}: {_first_line(exc)}"}
    phases = {phase.name: phase.total_bytes for phase in est.phases}
    return {"plan_peak_bytes": est.peak_bytes, "plan_peak_phase": est.peak_phase,
            "plan_denoise_bytes": phases.get("denoise"), "plan_decode_bytes": phases.get("decode"),
            "plan_vae_tiled": est.vae_tiled}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run_case(root: Path, policy: str, fmt: str, req: GenerationRequest, *, device: str, fraction: float,
             vae_tiling: bool | str, budget_gib: float = 0.0) -> tuple[dict[str, Any], Any]:
    """One placement x format in a fresh engine: plan, load, run; a refusal or an OOM is a row, not a crash."""
    row: dict[str, Any] = {"policy": policy, "format": fmt, "placement": policy + ("+fp8" if fmt == "fp8" else ""),
                           "output": req.output, "status": "ok"}
    started = time.perf_counter()
    engine: GenerationEngine | None = None
    stage = "start"
    output = None
    try:
        engine = GenerationEngine(root, device=device, offload=policy,
                                  weight_storage="fp8" if fmt == "fp8" else "native",
                                  memory_fraction=fraction, vae_tiling=vae_tiling, vram_budget_gib=budget_gib)
        probe = MemoryProbe(engine.device)
        row.update(plan_estimate(engine, root, req, Placement(policy, fmt == "fp8")))
        stage = "plan"
        engine.validate(req)
        stage = "load"
        loading = time.perf_counter()
        with engine.exclusive(req.model, req):
            pass
        row["load_s"] = time.perf_counter() - loading
        placed = engine.placement_of(req.model)
        row["placed_as"] = placed.label if placed else None
        row.update(expert_bytes(engine.load(req.model)))
        row["resident_bytes"] = probe.resident()
        stage = "run"
        job = timed_job(engine, req, probe)
        output = output_of(job.result)
        row.update(step_s=job.steady_step_s, steps_s=job.step_s, after_steps_s=job.after_steps_s,
                   denoise_peak_bytes=job.denoise_peak, job_peak_bytes=job.job_peak)
    except ResourceError as exc:
        # Before loading it is the memory plan's refusal; after, the engine's report of an out-of-memory.
        why = _first_line(exc)
        row["status"] = f"refused by plan: {why}" if stage == "plan" else f"out of memory ({stage}): {why}"
    except Exception as exc:  # noqa: BLE001 - one case failing must not cost the others' figures
        kind = "out of memory" if is_oom(exc) else f"error: {type(exc).__name__}"
        row["status"] = f"{kind} ({stage}): {_first_line(exc)}"
    finally:
        if engine is not None:
            engine.close()
        release_memory()
    row["case_s"] = time.perf_counter() - started
    return row, output


# ------------------------------------------------------------------------------------------ the check


class _KeptInFp32(logging.Filter):
    """Drop diffusers' per-load warning that the GGUF time-embedding weights are dequantized to FP32 (expected)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is required to remain in FP32" not in record.getMessage()


def _gpu(device: torch.device) -> dict[str, Any]:
    if device.type != "cuda":
        return {"name": "cpu", "total_bytes": 0}
    props = torch.cuda.get_device_properties(device)
    return {"name": props.name, "total_bytes": int(props.total_memory)}


def _process_start() -> float:
    """time.time() when this process started: run as a script, its imports count against the budget too."""
    import psutil

    return float(psutil.Process().create_time())


def _split(text: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    chosen = [s.strip() for s in text.split(",") if s.strip()] if text else list(allowed)
    unknown = [c for c in chosen if c not in allowed]
    if unknown:
        raise SystemExit(f"{flag}: {', '.join(unknown)} not among {', '.join(allowed)}")
    return chosen


COLUMNS: list[tuple[str, str, Callable[[Any], str]]] = [
    ("placement", "placement", str),
    ("format", "format", str),
    ("load_s", "load s", fixed(1)),
    ("step_s", "step s", fixed(3)),
    ("block_s", "block s", fixed(4)),
    ("resident_bytes", "resident GiB", gib),
    ("denoise_peak_bytes", "peak GiB", gib),
    ("plan_denoise_bytes", "plan GiB", gib),
    ("block_bytes", "block MiB", mib),
    ("weights_bytes_40", "40-blk expert GiB", gib),
    ("step_s_40", "40-blk step s", fixed(1)),
    ("projected_peak_bytes_40", "40-blk peak GiB", gib),
    ("fits_cap_40", "fits cap", lambda v: "yes" if v else "no"),
    ("output", "out", str),
    ("after_steps_s", "decode s", fixed(2)),
    ("job_peak_bytes", "job peak GiB", gib),
    ("plan_peak_bytes", "plan job GiB", gib),
    ("max_abs_diff_vs_none", "max|diff| vs none", lambda v: f"{v:.3g}"),
    ("status", "status", str),
]


def main(argv: list[str] | None = None, *, started: float | None = None) -> int:
    """The check; `--budget-seconds` counts from `started` (time.time()), by default from this call.

    Not from the process's start when called in-process: a test worker may have run for minutes already."""
    started = time.time() if started is None else started
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny widths on the CPU, in seconds (the tests run this)")
    parser.add_argument("--device", default="", help="auto, cuda, cpu (default: auto; cpu with --tiny)")
    parser.add_argument("--cap-gib", type=float, default=24.0, help="GPU memory cap (memory_fraction = cap / total)")
    parser.add_argument("--budget-gib", type=float, default=0.0,
                        help="the memory plan's budget instead of the GPU's (vram_budget_gib; also plans on the CPU)")
    parser.add_argument("--policies", default="", help=f"comma-separated, of {', '.join(POLICIES)} (default: all)")
    parser.add_argument("--formats", default="", help=f"comma-separated, of {', '.join(FORMATS)} (default: all)")
    parser.add_argument("--size", default="", help=f"WIDTHxHEIGHT (default {JOB['size']}; --tiny {TINY_JOB['size']})")
    parser.add_argument("--frames", type=int, default=0)
    parser.add_argument("--steps", type=int, default=0)
    parser.add_argument("--guidance", type=float, default=3.5)
    parser.add_argument("--decode", choices=("once", "all", "none"), default="once",
                        help="run the VAE decode in the first case that gets through, in every case, or never")
    parser.add_argument("--vae-tiling", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--budget-seconds", type=float, default=360.0,
                        help="skip the cases that would end past this many seconds from the start")
    parser.add_argument("--workdir", default="", help="build (or reuse) the models here and keep them")
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                        help="print JSON instead of the table; with FILE, print the table and write JSON there")
    args = parser.parse_args(argv)
    # Before anything starts CUDA: the engine's allocator settings apply only then.
    configure_allocator()
    quiet_progress_bars()
    logging.getLogger("diffusers.quantizers.gguf.gguf_quantizer").addFilter(_KeptInFp32())
    dims, job = (TINY, TINY_JOB) if args.tiny else (A14B, JOB)
    width, height = parse_size(args.size or str(job["size"]))
    frames, steps = args.frames or int(job["frames"]), args.steps or int(job["steps"])
    auto = "cpu" if args.tiny else "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if args.device in ("", "auto") else args.device)
    gpu = _gpu(device)
    cap = int(args.cap_gib * GIB) if device.type == "cuda" else None
    fraction = min(1.0, cap / gpu["total_bytes"]) if cap else 0.0
    policies = _split(args.policies, POLICIES, "--policies")
    formats = _split(args.formats, FORMATS, "--formats")
    writer, no_writer = _gguf_writer()

    root = Path(args.workdir) if args.workdir else workdir("gpu-check")
    rows: list[dict[str, Any]] = []
    try:
        build = ensure_models(root, dims, gguf="gguf" in formats)
        base = GenerationRequest(model=MODEL, prompts=[PROMPT], width=width, height=height, num_frames=frames,
                                 steps=steps, guidance_scale=args.guidance, guidance_scale_2=args.guidance, seed=1)
        probe_engine = GenerationEngine(root, device=str(device))
        by_step = [sorted(probe_engine.experts_for_steps(MODEL, steps, i, i + 1) or ()) for i in range(steps)]
        passes = 2 if args.guidance > 1 else 1
        tilings: dict[str, bool | str] = {"auto": "auto", "on": True, "off": False}
        tiling = tilings[args.vae_tiling]
        decode_pending = args.decode == "once"
        decode_policy = "group" if "group" in policies else policies[0]
        longest = 0.0
        outputs: dict[tuple[str, str, str], Any] = {}
        for policy, fmt in ORDER:
            if policy not in policies or fmt not in formats:
                continue
            runs: list[Literal["rgb", "latent"]] = ["rgb" if args.decode == "all" else "latent"]
            while runs:
                output = runs.pop(0)
                skip = ""
                if policy == "sequential" and device.type != "cuda":
                    skip = "n/a: sequential offload needs CUDA"
                elif fmt == "gguf" and writer is None:
                    skip = f"n/a: {no_writer}"
                elif time.time() - started + longest > args.budget_seconds:
                    skip = f"skipped: would pass the {args.budget_seconds:.0f} s budget (longest case {longest:.0f} s)"
                if skip:
                    rows.append({"policy": policy, "format": fmt, "output": output, "status": skip,
                                 "placement": policy + ("+fp8" if fmt == "fp8" else "")})
                    continue
                req = dataclasses.replace(base, model=MODEL_GGUF if fmt == "gguf" else MODEL, output=output)
                row, out = run_case(root, policy, fmt, req, device=str(device), fraction=fraction,
                                    vae_tiling=tiling, budget_gib=args.budget_gib)
                rows.append(row)
                if row["status"] != "ok":
                    continue
                extrapolate(row, passes, cap)
                outputs[_key(row)] = out
                if output == "latent":
                    row["after_steps_s"] = None  # a copy of the latents, not a decode
                # The decode runs once per check, not per case: the next case's estimate leaves it out.
                longest = max(longest, row["case_s"] - (row.get("after_steps_s") or 0.0))
                if decode_pending and policy == decode_policy:
                    # The whole job once more with the VAE decode, where a 24 GiB card would run it.
                    decode_pending = False
                    runs.append("rgb")
        _compare_latents(rows, outputs)
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)
    order = {(p, f): i for i, (p, f) in enumerate((p, f) for p in POLICIES for f in FORMATS)}
    rows.sort(key=lambda r: order[(r["policy"], r["format"])])
    results = {
        "device": str(device), "gpu": gpu["name"], "gpu_total_bytes": gpu["total_bytes"],
        "cap_bytes": cap, "memory_fraction": fraction, "plan_budget_gib": args.budget_gib, "tiny": args.tiny,
        "memory_metric": MemoryProbe(device).metric,
        "dims": {**asdict(dims), "width": dims.width}, "target_blocks": TARGET_BLOCKS,
        "job": {"size": f"{width}x{height}", "frames": frames, "steps": steps, "guidance": args.guidance,
                "passes": passes, "experts_by_step": by_step, "decode": args.decode, "vae_tiling": args.vae_tiling},
        **build, "budget_seconds": args.budget_seconds, "cases": rows, "elapsed_s": time.time() - started,
        "estimates": "40-block figures are extrapolated from 2 blocks: see bench/gpu_check.py's docstring",
    }
    _emit(results, args.json)
    return 1 if any(r["status"].startswith("error") for r in rows) else 0


def _key(row: dict[str, Any]) -> tuple[str, str, str]:
    return row["policy"], row["format"], row["output"]


def _compare_latents(rows: list[dict[str, Any]], outputs: dict[tuple[str, str, str], Any]) -> None:
    """Offload must not change a bit: each output against the same format's "none" run (when that ran)."""
    for row in rows:
        reference = outputs.get(("none", row["format"], row.get("output", "")))
        if _key(row) in outputs and reference is not None and row["policy"] != "none":
            row["max_abs_diff_vs_none"] = max_abs_diff(outputs[_key(row)], reference)


def _emit(results: dict[str, Any], target: str | None) -> None:
    text = json.dumps(results, indent=2)
    if target == "-":
        print(text)
        return
    job, dims = results["job"], results["dims"]
    cap = f"{results['cap_bytes'] / GIB:.0f} GiB cap" if results["cap_bytes"] else "no cap (CPU)"
    print(f"{results['gpu']} ({cap}); {job['size']}, {job['frames']} frames, {job['steps']} steps, CFG "
          f"{job['guidance']} ({job['passes']} passes), experts by step {job['experts_by_step']}")
    print(f"width {dims['width']} ({dims['heads']}x{dims['head_dim']}), ffn {dims['ffn_dim']}, "
          f"text {dims['text_dim']}, {dims['blocks']} blocks/expert, VAE base {dims['vae_dim']}; "
          f"build {results['build_s']:.0f} s, GGUF {results['gguf_s']:.0f} s")
    print(f"peak: {results['memory_metric']}; 40-blk columns are estimates\n")
    print(table(results["cases"], COLUMNS))
    print(f"\nelapsed {results['elapsed_s']:.0f} s of a {results['budget_seconds']:.0f} s budget")
    if target:
        Path(target).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main(started=_process_start()))

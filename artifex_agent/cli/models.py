"""`artifex-agent models`: list models (format, size, VRAM) and LoRAs, print a memory plan, build the tiny one."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from artifex_agent.cli.options import add_config, env
from artifex_agent.config import ClusterConfig
from artifex_agent.errors import ArtifexError, ConfigError

GIB = 1024**3
# What --plan assumes without a GPU or a configured vram_budget_gib: one RTX 3090.
DEFAULT_PLAN_GIB = 24.0


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "models", help="list models (format, size on disk, estimated VRAM), print a memory plan, or build the tiny one")
    add_config(p)
    p.add_argument("--name", default=env("--name"), help="agent whose models_root to list")
    p.add_argument("--build-tiny", type=Path, metavar="DIR",
                   help="write a tiny random-weight Wan2.2 checkpoint into DIR (offline)")
    p.add_argument("--variant", default="t2v-a14b", choices=["t2v", "t2v-a14b", "i2v-a14b", "ti2v"])
    p.add_argument("--plan", action="store_true",
                   help="print the memory plan (peak VRAM per placement, the one `auto` picks) for a job")
    p.add_argument("--model", help="with --plan: only this model")
    p.add_argument("--json", action="store_true", help="print the models and LoRAs as JSON")
    p.add_argument("--size", default="1280x720", help="with --plan: WIDTHxHEIGHT (default 1280x720)")
    p.add_argument("--frames", type=int, default=81, help="with --plan: frames (default 81)")
    p.add_argument("--guidance", type=float, default=3.5, help="with --plan: guidance scale (>1: CFG)")
    p.add_argument("--task", choices=["t2v", "i2v"], default="t2v", help="with --plan: text- or image-to-video")
    p.add_argument("--budget-gib", type=float, default=None,
                   help="with --plan: GiB to plan for (default: the agent's vram_budget_gib, its GPU, else 24)")


def run(args: argparse.Namespace) -> int:
    if args.build_tiny:
        from artifex_agent.engines.checkpoint import build_tiny_checkpoint

        path = build_tiny_checkpoint(args.build_tiny, variant=args.variant)
        print(f"wrote {path}")
        return 0
    from artifex_agent.engines.lora import list_loras
    from artifex_agent.engines.models import list_models

    cfg = ClusterConfig.load(args.config).agent(args.name)
    entries = list_models(cfg.models_root)
    loras = [] if args.model else list_loras(cfg.models_root)
    if args.model:
        entries = [e for e in entries if e.name == args.model]
        if not entries:
            raise ConfigError(f"no model {args.model!r} under {cfg.models_root}")
    if args.json and not args.plan:
        print(json.dumps({"models": [_model_json(m) for m in entries], "loras": [_lora_json(i) for i in loras]},
                         indent=2))
        return 0 if entries else 1
    if not entries:
        print(f"no models under {cfg.models_root}")
        return 1
    if args.plan:
        return _print_plans(args, cfg, [e for e in entries if e.kind != "upscale"])
    _print_list(entries)
    if loras:
        _print_loras(loras)
    return 0


def _model_json(m: Any) -> dict[str, Any]:
    fmt, disk, vram = _describe(m) if m.complete else ("", "", "")
    return {"name": m.name, "kind": m.kind, "two_experts": bool(getattr(m, "two_experts", False)),
            "format": fmt, "on_disk": disk, "vram_1280x720x81": vram, "complete": m.complete,
            "problem": m.problem or ""}


def _lora_json(info: Any) -> dict[str, Any]:
    return {"name": info.name, "family": info.family, "format": info.format, "rank": info.rank,
            "inner_dim": info.inner_dim, "size_bytes": info.size}


def _print_loras(loras: list[Any]) -> None:
    from rich.table import Table

    from artifex_agent.terminal import table_console

    table = Table("LoRA", "family", "format", "rank", "size", box=None)
    for info in loras:
        table.add_row(info.name, info.family, info.format, str(info.rank or "?"), f"{info.size / 2**20:.1f} MiB")
    table_console().print(table)


def _print_list(entries: list[Any]) -> None:
    from rich.table import Table

    from artifex_agent.terminal import table_console

    table = Table("model", "kind", "experts", "format", "on disk", "VRAM 1280x720x81", "state", box=None)
    for m in entries:
        fmt = disk = vram = ""
        if m.complete:
            fmt, disk, vram = _describe(m)
        state = "ok" if m.complete else f"INCOMPLETE: {m.problem}"
        experts = "" if m.kind == "upscale" else ("two" if m.two_experts else "one")
        table.add_row(m.name, m.kind, experts, fmt, disk, vram, state)
    table_console().print(table)


def _describe(m: Any) -> tuple[str, str, str]:
    """Format of the (first) expert's weights, bytes on disk, and the lightest placement's peak at 720p/81."""
    size = sum(p.stat().st_size for p in (m.path.rglob("*") if m.path.is_dir() else [m.path]) if p.is_file())
    if m.kind == "upscale":
        return m.path.suffix.lstrip("."), f"{size / GIB:.2f} GiB", ""
    from artifex_agent.engines import weights

    try:
        info = weights.component_weights(m.path, "transformer")
        fmt = info.format
        rows = _plan_rows(m, 1280, 720, 81, 3.5, "t2v" if m.kind != "i2v" else "i2v", 0)
        lightest = min(rows, key=lambda r: r[1].peak_bytes)
        vram = f"{lightest[1].peak_bytes / GIB:.1f} GiB ({lightest[0]})"
    except ArtifexError as exc:
        return f"? ({exc})", f"{size / GIB:.2f} GiB", ""
    return fmt, f"{size / GIB:.2f} GiB", vram


def _plan_rows(m: Any, width: int, height: int, frames: int, guidance: float, task: str,
               budget: int, device: str = "cuda") -> list[tuple[str, Any, Any]]:
    """(placement label, memplan.Estimate, memplan.Plan) for every placement an `auto` agent may use."""
    import torch

    from artifex_agent.engines.generation import GenerationRequest, _quantized
    from artifex_agent.engines.placement import candidates
    from artifex_agent.engines.vram import JobPlanner

    placements = candidates("auto", "auto", quantized=_quantized(m))
    planner = JobPlanner(torch.device(device), torch.bfloat16)
    req = GenerationRequest(model=m.name, prompts=["x"], task=task, width=width, height=height,  # type: ignore[arg-type]
                            num_frames=frames, guidance_scale=guidance)
    plans = planner.model_plan(m, req, placements, budget, suggest=True)
    return [(p.label, plans[p.fp8].estimate_for(p.policy), plans[p.fp8]) for p in placements]


def _budget(args: argparse.Namespace, cfg: Any) -> tuple[int, str]:
    if args.budget_gib is not None:
        return int(args.budget_gib * GIB), "--budget-gib"
    if cfg.vram_budget_gib:
        return int(cfg.vram_budget_gib * GIB), f"agents.{cfg.name}.vram_budget_gib"
    import torch

    if torch.cuda.is_available():
        from artifex_agent.engines.gpu import memory_budget

        budget, total = memory_budget(torch.device("cuda"), cfg.gpu_memory_fraction)
        return budget, f"this GPU ({total / GIB:.1f} GiB, {budget / GIB:.1f} GiB usable now)"
    return int(DEFAULT_PLAN_GIB * GIB), "no GPU here: planned for a 24 GiB card (RTX 3090)"


def _print_plans(args: argparse.Namespace, cfg: Any, entries: list[Any]) -> int:
    from rich.table import Table

    from artifex_agent.terminal import table_console

    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size must look like 1280x720, not {args.size!r}") from None
    budget, where = _budget(args, cfg)
    console = table_console()
    console.print(f"memory plan for {width}x{height}, {args.frames} frames, guidance {args.guidance:g}: "
                  f"budget {budget / GIB:.1f} GiB ({where})")
    refused = 0
    for m in entries:
        if not m.complete:
            console.print(f"{m.name}: INCOMPLETE: {m.problem}")
            continue
        task = "i2v" if m.kind == "i2v" else args.task
        rows = _plan_rows(m, width, height, args.frames, args.guidance, task, budget)
        chosen = next((label for label, est, _ in rows if est.fits), None)
        table = Table("placement", "weights GiB", "activations GiB", "VAE GiB", "peak GiB", "fits", "auto",
                      title=m.name, box=None)
        for label, est, _ in rows:
            vae = f"{est.vae_bytes / GIB:.1f}{' tiled' if est.vae_tiled else ''}"
            table.add_row(label, f"{est.weights_bytes / GIB:.1f}",
                          f"{(est.activation_bytes + est.transient_bytes) / GIB:.1f}", vae,
                          f"{est.peak_bytes / GIB:.1f}", "yes" if est.fits else "no", "*" if label == chosen else "")
        console.print(table)
        if chosen is None:
            refused += 1
            console.print(f"[red]refused:[/red] {rows[0][2].refusal()}")
    return 1 if refused else 0

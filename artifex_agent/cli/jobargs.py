"""The job flags `submit` and `demo` share, and their translation to wire messages."""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import Any

from artifex_agent.cli.options import env
from artifex_agent.errors import RequestError
from artifex_agent.jobspec import PRESET_FIELDS, JobSpec
from artifex_agent.jobspec_pb import generate_request, post_spec
from artifex_agent.lora_ref import SCHEDULERS, LoraRef
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.vocabulary import CODEC_NAMES, ENCODERS


def parse_size(text: str) -> tuple[int, int]:
    """'1280x720' -> (1280, 720)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"size {text!r} must look like WIDTHxHEIGHT, e.g. 1280x720")
    return int(m.group(1)), int(m.group(2))


# The defaults are the real thing; `submit --help` says they need a GPU, and what a CPU can run.
GPU_NOTE = ("The defaults (model wan2.2-t2v-a14b, 1280x720, 81 frames, 40 steps) need a CUDA GPU (24 GB: "
            "docs/memory.md); on a CPU-only agent they would run for days. `artifex-agent models --plan` shows what "
            "fits where; `artifex-agent demo` runs a tiny model on any CPU.")


def add_job_arguments(parser: argparse.ArgumentParser, *, model_default: str = "wan2.2-t2v-a14b") -> None:
    p = parser.add_argument_group("the job", description=GPU_NOTE)
    p.add_argument("prompts", nargs="+", metavar="PROMPT", help="one clip per prompt")
    p.add_argument("--model", default=env("--model", model_default), help="model folder name under models_root")
    p.add_argument("--size", default=env("--size", "1280x720"), type=parse_size, help="WIDTHxHEIGHT")
    p.add_argument("--frames", default=env("--frames", 81), type=int, help="frames (4k+1, e.g. 81)")
    # No defaults here for what a preset may set: an unset flag leaves the field to the preset (or JobSpec).
    p.add_argument("--preset", default=env("--preset"),
                   help="generation preset from the cluster file or the built-ins: fast (4 steps with the "
                        "Lightning LoRAs), quality (the model's defaults); flags given here win over it")
    p.add_argument("--steps", default=env("--steps"), type=int, help="denoising steps (default 40)")
    p.add_argument("--guidance", default=env("--guidance"), type=float,
                   help="classifier-free guidance scale (default 4.0)")
    p.add_argument("--guidance-2", default=env("--guidance-2"), type=float,
                   help="guidance of the low-noise expert (0: same)")
    p.add_argument("--lora", dest="loras", action="append", type=_lora, metavar="NAME[:STRENGTH[:high|low|both]]",
                   help="a LoRA under models_root/loras/ (repeatable); high/low: only that expert")
    p.add_argument("--scheduler", default=env("--scheduler"), choices=[s for s in SCHEDULERS if s],
                   help="unipc, or euler (flow-match Euler, for step-distilled LoRAs); default: the model's own")
    p.add_argument("--shift", default=env("--shift"), type=float,
                   help="the scheduler's flow shift (default: the model's)")
    p.add_argument("--boundary", dest="boundary_ratio", default=env("--boundary"), type=float,
                   help="where the low-noise expert takes over, as a fraction of the timesteps (default: the model's)")
    p.add_argument("--negative", default=env("--negative", ""), help="negative prompt")
    p.add_argument("--seed", default=env("--seed", -1), type=int, help="seed (-1: from the clock)")
    p.add_argument("--fps", default=env("--fps", 16.0), type=float, help="frames per second of the output")
    p.add_argument("--image", type=Path, default=env("--image"), help="i2v: first frame (PNG/JPEG) to send")
    p.add_argument("--upscale", default=env("--upscale", 1), type=int, help="integer upscale factor")
    p.add_argument("--upscale-model", default=env("--upscale-model", ""),
                   help="upscale model file under models_root/upscale (default: plain resampler)")
    p.add_argument("--codec", default=env("--codec", "h264"), choices=CODEC_NAMES, help="video codec of the output")
    p.add_argument("--crf", default=env("--crf", 18), type=int, help="constant quality: lower is better and bigger")
    p.add_argument("--encode-preset", default=env("--encode-preset", ""),
                   help="the encoder's preset (x264 medium, slow...; NVENC p1..p7); was --preset")
    p.add_argument("--encoder", default=env("--encoder", "auto"), choices=ENCODERS,
                   help="auto: NVENC where the post agent has it, else software")
    p.add_argument("--output", default=env("--output", ""), help="output name under the post agent's output_root")


def _lora(text: str) -> LoraRef:
    try:
        return LoraRef.parse(text)
    except RequestError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def job_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The JobSpec fields the flags set (for JobSpec.from_dict); those a preset may set only when given."""
    width, height = args.size
    raw: dict[str, Any] = {
        "prompts": list(args.prompts), "model": args.model, "width": width, "height": height, "frames": args.frames,
        "negative": args.negative, "seed": args.seed if args.seed >= 0 else int(time.time()) & 0x7FFFFFFF,
        "fps": args.fps, "upscale": args.upscale, "upscale_model": args.upscale_model, "codec": args.codec,
        "crf": args.crf, "encode_preset": args.encode_preset, "encoder": args.encoder, "output": args.output}
    if args.preset:
        raw["preset"] = args.preset
    for name in PRESET_FIELDS:
        value = getattr(args, name, None)
        if value is not None:
            raw[name] = value
    return raw


def to_messages(spec: JobSpec, image: Path | None = None) -> tuple[pb.GenerateRequest, pb.PostSpec]:
    """The GenerateRequest and PostSpec of a (resolved) spec, with the i2v image's bytes sent along."""
    request = generate_request(spec)
    if image is not None:
        try:
            request.image = Path(image).read_bytes()
        except OSError as exc:
            raise RequestError(f"cannot read image {image}: {exc.strerror}") from None
        request.task, request.image_path = pb.TASK_I2V, ""
    name = spec.output or f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(spec.prompts[0])}"
    return request, post_spec(spec, name)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40].lower() or "clip"
